// Package ssh is loopgate's SSH handler. It terminates the agent's SSH
// connection with a host certificate from loopgate's host CA (so an agent
// that trusts the CA's @cert-authority line checks it strictly), logs in to
// the real target with credentials the agent never holds (a per-session
// user certificate from loopgate's user CA, or a static key or password),
// and bridges channels under policy:
//
//   - exec commands are parsed and decided before they are forwarded; the
//     reply is held while approvers decide and the agent's stdin stays
//     queued (the channel window back-pressures it). A denial answers
//     success, writes "loopgate: <reason>" to stderr and exits 126.
//   - shell, sftp and forwards are decided by class (shell, file-read,
//     file-write, forward); agent and X11 forwarding and remote forwards
//     are refused.
//   - channel requests are forwarded one at a time, in order, with the
//     target's reply relayed; exit-status and exit-signal reach the agent
//     before the channel closes and are never made up; stderr is copied
//     on its own; keepalives are answered on each leg and not forwarded;
//     the target's hostkeys-00@openssh.com never reaches the agent.
//
// Every Go channel x/crypto/ssh hands out is serviced until it closes:
// an unserviced one stalls the connection, rekeys included (go#18439).
//
// It never imports store: records go through l7.Session.
package ssh
