// Package shellclass classifies shell command lines (the command of an SSH
// exec request) for policy, from a real bash parse (mvdan.cc/sh/v3), never
// from text matching.
//
// Classify parses a line, walks every simple command (in lists, pipes,
// compound commands, command and process substitutions, and the literal
// scripts of sh -c, su -c, eval and watch), removes quotes ("r"m, \rm,
// $'\x72m' are rm), names programs by their base name (/bin/rm is rm),
// peels wrappers off (sudo, doas, pkexec, su, env, nohup, timeout, nice,
// ionice, stdbuf, time, command, builtin, exec, setsid, busybox, watch)
// and sorts each command into classes:
//
//   - read: a program of a reviewed list (ls, cat, grep, journalctl,
//     systemctl status, ps, df, ...) in a form that only reads;
//   - write: any other program, or output redirected to a file;
//   - privilege: sudo, su, doas, pkexec, account and key tools, and writes
//     to sudoers, authorized_keys or the account databases;
//   - file-read, file-write: the remote end of legacy scp (-f, -t) and of
//     rsync (--server);
//   - unknown: whatever the parse cannot see through: a program computed at
//     run time ($(echo rm), a=rm; $a, {rm,x}, /bin/r?), eval of computed
//     text, an interpreter fed its program by a pipe, a here-document or the
//     session, or a computed -c string, xargs, find -exec, source, shell
//     functions, PATH/LD_PRELOAD-style assignments, parse errors and input
//     over the limits.
//
// A line has every class of its commands; policy takes the strictest
// action over them, so "ls; rm x" needs what rm needs. The constants Shell
// and Forward name the classes of the SSH requests that are not command
// lines.
//
// What it cannot do: the parse sees text, not what runs. A script file, an
// interpreter's inline code, an editor or a pager can run anything; they
// are write or unknown, never read. The remote system's accounts and
// sudoers stay the authority.
//
// The package is pure and safe for concurrent use. Input is bounded:
// lines over MaxInput, deeper than MaxNesting or MaxScriptDepth, or with
// more than MaxCommands simple commands are Unknown.
package shellclass
