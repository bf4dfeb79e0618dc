package main

import "testing"

func TestDebVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		describe string
		commits  int
		want     string
	}{
		{"v1.2.3", 0, "1.2.3"},
		{"1.2.3", 0, "1.2.3"},
		{"v1.2.3-4-gabcdef0", 0, "1.2.3+4.gabcdef0"},
		{"v1.2.3-4-gabcdef0-dirty", 0, "1.2.3+4.gabcdef0.dirty"},
		{"v1.2.3-dirty", 0, "1.2.3+dirty"},
		{"595295a", 172, "0.0.0+git172.595295a"},
		{"1234567", 9, "0.0.0+git9.1234567"},
		{"595295a-dirty", 172, "0.0.0+git172.595295a.dirty"},
		{"dev", 0, "0.0.0+dev"},
	} {
		t.Run(tc.describe, func(t *testing.T) {
			got, err := DebVersion(tc.describe, tc.commits)
			if err != nil || got != tc.want {
				t.Errorf("DebVersion(%q) = %q, %v; want %q", tc.describe, got, err, tc.want)
			}
		})
	}
	if _, err := DebVersion("not a version!", 0); err == nil {
		t.Error("DebVersion accepted garbage")
	}
}
