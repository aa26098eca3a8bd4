package remote

import (
	"context"
	"io"
	"net/http"
	"sync"
)

// warmConns is how many connections warm opens to a registry: one per
// layer header fetch that a cold open makes at once (image opens 16 layers
// in parallel, each fetching its two ends).
const warmConns = 16

// warm prepares the client while the manifest is being resolved: it does
// the blob client's auth handshake and opens warmConns idle connections to
// the registry, so that the layers' first GETs, all sent at once right after
// the manifest arrives, neither wait for a handshake nor each pay a TCP (and
// TLS) set-up. It returns when done; failures are left to the real requests.
// A client with mirrors is only handshaken (the GETs go to the mirrors).
func (c *client) warm(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.httpClient(ctx) })
	if len(c.mirrors) == 0 {
		url := c.repo.Scheme() + "://" + c.repo.RegistryStr() + "/v2/"
		for range warmConns - 1 {
			wg.Go(func() {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return
				}
				resp, err := c.base.RoundTrip(req)
				if err != nil {
					return
				}
				// Drained and closed, the connection goes back to the pool.
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			})
		}
	}
	wg.Wait()
}
