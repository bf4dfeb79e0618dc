// Package cast writes and plays terminal recordings in asciicast v2
// (docs.asciinema.org/manual/asciicast/v2): a JSON header line, then one
// [seconds, code, data] line per event: "o" output, "i" input, "r" resize
// ("COLSxROWS"), "m" marker.
//
// A Writer records one pty channel. SSH splits output at arbitrary byte
// boundaries, so a UTF-8 sequence cut across two packets is carried over
// to the next write instead of being turned into U+FFFD (sshpiper and
// warpgate convert lossily); only bytes that are invalid in themselves
// become U+FFFD. A Writer stops recording output past its byte limit and
// says so with a marker, so a recording is bounded.
//
// Reader parses a cast, bounding line length; Play writes a cast's output
// to a terminal with its timing, idle gaps capped and a speed factor
// (loopgate sessions replay).
//
// Writer is safe for concurrent use (stdout and stderr pumps both write
// output). Reader is not.
package cast
