module github.com/loopgate/loopgate

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0
	github.com/mattn/go-sqlite3 v1.14.53
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
)

tool github.com/cilium/ebpf/cmd/bpf2go
