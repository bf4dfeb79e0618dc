// Package bpf holds loopgate's eBPF programs and the Go bindings bpf2go
// generates from them: redirect.c (TCP/UDP redirect and refusal, every
// kernel since 6.1) and unix.c (unix sockets, kernel 6.7+, loaded only where
// the kernel has those hooks). common.h holds the maps both share by pin
// name.
//
// The generated *_bpfel.go and *_bpfel.o files are committed so that
// `go build` needs no clang; `make generate` (go generate ./bpf) rebuilds them
// with Debian's clang 14, and TestGeneratedUpToDate checks that the committed
// object matches the source whenever clang is present. Go mirrors of the C
// structs (RedirectRecord, RedirectFlowKey, ...) come from `bpf2go -type`,
// never by hand.
//
// This package loads nothing by itself and holds no policy: package intercept
// loads, pins and attaches the programs and fills the maps.
package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type record -type flow_key -type target_key -type target_val -type workload_val -type allow_key -type config Redirect redirect.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type unix_allow_key Unix unix.c
