package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/mapsentry/mapsentry/inspect"
)

// ErrConflict is returned when the process is already held: by a crash
// capture, or by another live decode or dump.
var ErrConflict = errors.New("process busy")

// Decode asks the daemon to stop pid, decode the map at req.Addr and
// resume it. A write operation: root or api.write_group only.
func (c *Client) Decode(ctx context.Context, req inspect.DecodeRequest) (*inspect.DecodeResult, error) {
	var res inspect.DecodeResult
	return &res, c.post(ctx, "/v1/decode", req, &res)
}

// Dump asks the daemon to stop pid, read every goroutine and resume it.
// A write operation: root or api.write_group only.
func (c *Client) Dump(ctx context.Context, req inspect.DumpRequest) (*inspect.DumpResult, error) {
	var res inspect.DumpResult
	return &res, c.post(ctx, "/v1/dump", req, &res)
}

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://mapsentry"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		switch resp.StatusCode {
		case http.StatusForbidden:
			return fmt.Errorf("%s: %w", e.Error, ErrForbidden)
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w", e.Error, ErrNotFound)
		case http.StatusConflict:
			return fmt.Errorf("%s: %w", e.Error, ErrConflict)
		}
		return fmt.Errorf("%s: %s: %s", path, resp.Status, e.Error)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}
