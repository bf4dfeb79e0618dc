package intercept

var testPaths cgroupPaths

// LookupCgroupPath is the Listener's cached cgroup path lookup, for tests.
func LookupCgroupPath(mount string, id uint64, roots []string) string {
	return testPaths.lookup(mount, id, roots)
}
