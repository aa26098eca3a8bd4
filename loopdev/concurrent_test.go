package loopdev_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/obdfs/obdfs/internal/needs"
	"github.com/obdfs/obdfs/loopdev"
)

// churnEnv makes the test binary run only the churn, as the second process
// of TestConcurrentChurn.
const churnEnv = "OBDFS_LOOPDEV_CHURN"

// TestConcurrentChurn attaches and detaches devices from several goroutines
// and a second process at once, the way packages tested side by side do.
// Every cycle detaches twice, the second time with a name that is stale by
// then; each worker checks that its own device keeps its size and content
// while the others churn. A detach that went by number alone would unbind
// (or mark autoclear) whichever device took the number since.
func TestConcurrentChurn(t *testing.T) {
	needs.Loop(t)
	if os.Getenv(churnEnv) != "" {
		if err := churn(t, 3, 15); err != nil {
			t.Fatal(err)
		}
		return
	}
	var other *exec.Cmd
	var out bytes.Buffer
	if !testing.Short() {
		other = exec.Command(os.Args[0], "-test.run=^TestConcurrentChurn$", "-test.count=1")
		other.Env = append(os.Environ(), churnEnv+"=1")
		other.Stdout, other.Stderr = &out, &out
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
	}
	err := churn(t, 3, 15)
	if other != nil {
		if werr := other.Wait(); werr != nil {
			t.Errorf("second process: %v\n%s", werr, out.Bytes())
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func churn(t *testing.T, workers, cycles int) error {
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		file, content := tempImage(t, 1<<20, 0o644)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- churnOne(file, content, cycles, w)
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func churnOne(file string, content []byte, cycles, w int) error {
	for i := range cycles {
		d, err := loopdev.Attach(file, loopdev.Options{Mode: loopdev.ReadOnly})
		if err != nil {
			return fmt.Errorf("worker %d cycle %d: %w", w, i, err)
		}
		check := func(when string) error {
			got, err := os.ReadFile(d.Path)
			if err != nil || !bytes.Equal(got, content) {
				return fmt.Errorf("worker %d cycle %d %s: %s read %d bytes (%v), want its own %d", w, i, when, d.Path, len(got), err, len(content))
			}
			return nil
		}
		if err := check("after attach"); err != nil {
			d.Detach()
			return err
		}
		if err := check("again"); err != nil {
			d.Detach()
			return err
		}
		if _, err := d.Detach(); err != nil {
			return fmt.Errorf("worker %d cycle %d: detach %s: %w", w, i, d.Path, err)
		}
		// Stale now: the number may serve another worker or process.
		if _, err := d.Detach(); !errors.Is(err, loopdev.ErrNotLoop) {
			return fmt.Errorf("worker %d cycle %d: second detach of %s: %v, want ErrNotLoop", w, i, d.Path, err)
		}
	}
	return nil
}
