package shellclass

import "testing"

func BenchmarkClassify(b *testing.B) {
	for _, cmd := range []string{"ls -l /var/log", "sudo systemctl restart nginx && journalctl -u nginx -n 50 | grep -i error",
		`bash -lc 'cd /srv/app && git pull && ./deploy.sh > /tmp/deploy.log 2>&1'`} {
		b.Run(cmd[:min(len(cmd), 20)], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Classify(cmd)
			}
		})
	}
}
