// Package sftpwire reads and writes SFTP version 3 packets
// (draft-ietf-secsh-filexfer-02, with OpenSSH's extensions) passing
// through the SSH bridge, so each file operation can be decided and
// recorded without terminating SFTP.
//
// The bridge feeds the agent's channel data to a Decoder, which
// reassembles packets across chunks and refuses any longer than
// MaxPacket. ParseRequest says what each request does (operation, paths,
// handle, class); the bridge forwards the packet unchanged or answers it
// itself with Status(id, PermissionDenied, ...). Packets from the server
// go through another Decoder and ParseReply. A Tracker pairs replies with
// requests, maps handles to the paths they were opened with, counts the
// bytes read and written through each handle, and yields one Record per
// operation when its reply (or, for files, its CLOSE) arrives.
//
// Legacy scp (scp -O) is not SFTP: SCPSource follows the source side of
// its stream (the files sent) and SCPAcks the sink's answers, for the
// records of an exec of scp -t or scp -f (see scp.go).
//
// Why not github.com/pkg/sftp: its RequestServer in front of an
// sftp.Client would terminate SFTP and re-implement every operation's
// semantics; its packet codec for v1 is internal. Parsing passively keeps
// the target's own sftp-server as the authority (warpgate's design).
//
// Nothing here does I/O or holds goroutines. A Decoder's and a frame's
// bytes are valid until the next Feed. A Decoder is not safe for
// concurrent use (one per direction); a Tracker is (one per channel,
// shared by the request and reply pumps).
package sftpwire
