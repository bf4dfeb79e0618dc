package ssh

// sftpSessionClasses decide an sftp subsystem as a whole until the SFTP
// frame parser (l7/ssh/sftpwire) lands and decides operation by operation.
var sftpSessionClasses = []string{ClassFileRead, ClassFileWrite}
