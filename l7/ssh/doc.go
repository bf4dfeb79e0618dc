// Package ssh is loopgate's SSH handler. It terminates the agent's SSH
// connection with a host certificate from loopgate's host CA (so an agent
// that trusts the CA's @cert-authority line checks it strictly), logs in to
// the real target with credentials the agent never holds (a per-session
// user certificate from loopgate's user CA, or a static key or password;
// the target's host key checked against known_hosts or a host CA), and
// bridges channels under policy, deciding everything through
// l7.Session.Authorize:
//
//   - exec commands are parsed (policy/shellclass) and decided, by command
//     patterns then classes, before they are forwarded; the reply is held
//     while approvers decide and the agent's stdin stays queued (the
//     channel window back-pressures it). A denial answers success, writes
//     "loopgate: <reason>" to stderr and exits 126.
//   - a shell is class shell; the sftp subsystem is followed packet by
//     packet (l7/ssh/sftpwire) and each operation decided as file-read or
//     file-write, a refused one answered PERMISSION_DENIED; forwards
//     (direct-tcpip) are class forward, or "direct-tcpip HOST:PORT" to
//     command patterns. Agent and X11 forwarding, remote forwards and
//     other subsystems are refused.
//   - channel requests are forwarded one at a time, in order, with the
//     target's reply relayed. Nothing of a program (output, exit status)
//     reaches the agent before the reply to its exec, and its EOF not
//     before its exit status: x/crypto hands these to different
//     goroutines, and OpenSSH's ControlMaster loses the exit status
//     otherwise. Exit status and signal are never made up; stderr is
//     copied on its own; keepalives are answered on each leg and not
//     forwarded; the target's hostkeys-00@openssh.com never reaches the
//     agent.
//   - stdout and stderr go through the rule's value detectors as a stream
//     (policy/mask), except the stdout of file transfers over exec (scp
//     -t/-f, rsync), whose protocol masking would corrupt. A pty's masked
//     output and resizes are recorded as asciicast v2 (l7/ssh/cast) in
//     cast events.
//
// Every Go channel x/crypto/ssh hands out is serviced until it closes:
// an unserviced one stalls the connection, rekeys included (go#18439).
// Every goroutine of a session recovers from a panic and ends only that
// connection. Agents are offered AES ciphers only (x/crypto's chacha20
// is generic Go on amd64), OpenSSH clients AES-GCM only.
//
// It never imports store: records go through l7.Session.
package ssh
