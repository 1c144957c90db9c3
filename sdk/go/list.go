package hearth

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// ListOptions filter and page the sandbox list.
type ListOptions struct {
	// Metadata keeps sandboxes whose metadata has every one of these pairs.
	Metadata map[string]string
	// States keeps sandboxes in one of these states; empty means running and paused.
	States []SandboxState
	// Limit is the page size (the API caps it at 100); zero leaves it to the API.
	Limit int
	// NextToken starts from a page a previous listing stopped at.
	NextToken string
}

// nextTokenHeader carries the token of the next page; its absence means the last page.
const nextTokenHeader = "X-Next-Token"

// SandboxPager pages through GET /v2/sandboxes. It is not safe for concurrent use.
type SandboxPager struct {
	c     *Client
	query url.Values
	next  string
	done  bool
}

// ListSandboxes returns a pager over the sandboxes that match opts. Nothing is fetched until
// Next or All.
func (c *Client) ListSandboxes(opts ListOptions) *SandboxPager {
	q := url.Values{}
	if len(opts.Metadata) > 0 {
		q.Set("metadata", encodeMetadataFilter(opts.Metadata))
	}
	for _, s := range opts.States {
		q.Add("state", string(s))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	return &SandboxPager{c: c, query: q, next: opts.NextToken}
}

// HasNext reports whether another page may follow.
func (p *SandboxPager) HasNext() bool { return !p.done }

// NextToken is the token of the page Next will fetch, "" before the first page; save it to
// resume a listing later with ListOptions.NextToken.
func (p *SandboxPager) NextToken() string { return p.next }

// Next fetches the next page. After the last page HasNext is false.
func (p *SandboxPager) Next(ctx context.Context) ([]ListedSandbox, error) {
	q := url.Values{}
	for k, v := range p.query {
		q[k] = v
	}
	if p.next != "" {
		q.Set("nextToken", p.next)
	}
	var out []ListedSandbox
	_, h, err := p.c.call(ctx, "list sandboxes", http.MethodGet, "/v2/sandboxes", q, nil, &out, http.StatusOK)
	if err != nil {
		return nil, err
	}
	p.next = h.Get(nextTokenHeader)
	p.done = p.next == ""
	return out, nil
}

// All yields every remaining sandbox, fetching pages as it goes; it stops at the first error,
// which it yields.
func (p *SandboxPager) All(ctx context.Context) iter.Seq2[ListedSandbox, error] {
	return func(yield func(ListedSandbox, error) bool) {
		for p.HasNext() {
			page, err := p.Next(ctx)
			if err != nil {
				yield(ListedSandbox{}, err)
				return
			}
			for _, s := range page {
				if !yield(s, nil) {
					return
				}
			}
		}
	}
}

// encodeMetadataFilter renders the metadata query parameter as E2B's SDKs do: each key and
// value percent-encoded as by JavaScript's encodeURIComponent, then joined as a form
// (k=v&k2=v2) that is itself encoded as the parameter's value. The API decodes both layers, so
// keys and values may contain '=', '&' and '%'. Keys are sorted for a stable URL.
func encodeMetadataFilter(md map[string]string) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	inner := url.Values{}
	for _, k := range keys {
		inner.Add(encodeURIComponent(k), encodeURIComponent(md[k]))
	}
	return inner.Encode()
}

// encodeURIComponent escapes like JavaScript's function of that name, except that it also
// escapes !*'(), which every decoder accepts.
func encodeURIComponent(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
