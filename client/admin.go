package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// ErrForbidden is returned when the daemon refuses the caller (peer
// credentials: not root, not in the group the route needs).
var ErrForbidden = errors.New("forbidden")

// DeleteCrash deletes one crash report. It is a write operation: root or
// api.write_group only.
func (c *Client) DeleteCrash(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://mapsentry/v1/crashes/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("delete crash %s: %w", id, ErrNotFound)
	case http.StatusForbidden:
		return fmt.Errorf("%s: %w", e.Error, ErrForbidden)
	}
	return fmt.Errorf("delete crash %s: %s: %s", id, resp.Status, e.Error)
}
