package sqlclass

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// allocBytes returns the bytes classify allocates for sql.
func allocBytes(sql string) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	classify(sql, nil)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestClassifyCostLinear: classifying a text twice as long costs at most
// about twice the memory (allocations and bytes), so a statement under
// max_statement_bytes costs memory bounded by its size. Not parallel: it
// reads the process's allocation counters.
func TestClassifyCostLinear(t *testing.T) {
	for _, unit := range []string{"SELECT 1;", "UPDATE t SET a = a + 1 WHERE id IN (SELECT id FROM u WHERE v > 2);"} {
		small := strings.Repeat(unit, 2000)
		big := strings.Repeat(unit, 8000)
		allocs := func(sql string) float64 { return testing.AllocsPerRun(2, func() { classify(sql, nil) }) }
		aSmall, aBig := allocs(small), allocs(big)
		bSmall, bBig := allocBytes(small), allocBytes(big)
		t.Logf("%.20q: %d bytes: %.0f allocs, %d bytes allocated (%.0f a byte); x4: %.0f allocs, %d bytes",
			unit, len(small), aSmall, bSmall, float64(bSmall)/float64(len(small)), aBig, bBig)
		if aBig > 4.4*aSmall {
			t.Errorf("%.20q x4: allocations grew %.1fx", unit, aBig/aSmall)
		}
		if float64(bBig) > 4.4*float64(bSmall) {
			t.Errorf("%.20q x4: bytes allocated grew %.1fx", unit, float64(bBig)/float64(bSmall))
		}
	}
}

// BenchmarkClassifyRepeated classifies "SELECT 1;" repeated to 64 KiB and
// 1 MiB (the default max_statement_bytes).
func BenchmarkClassifyRepeated(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		sql := strings.Repeat("SELECT 1;", size/9)
		b.Run(fmt.Sprint(size>>10, "KiB"), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(sql)))
			for b.Loop() {
				classify(sql, nil)
			}
		})
	}
}
