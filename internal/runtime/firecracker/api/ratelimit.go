package api

// Hearth's egress limit for every microVM (DESIGN.md, Networking): a 100 MB burst bucket
// refilled at 200 MB/s, the same numbers netslot applies to containers with tc.
const (
	TxBucketBytes   = 100_000_000
	TxRateBytesPerS = 200_000_000
)

// TxRateLimiter returns the limiter for a guest's egress (NetworkInterface.TxRateLimiter).
// The bucket starts full, which is the burst; refill_time is the milliseconds to refill the
// whole bucket, so the rate is TxBucketBytes*1000/refill_time = TxRateBytesPerS. No
// one_time_burst: the full bucket already is the burst DESIGN.md asks for, and an extra one
// would let a freshly resumed guest send 100 MB more than the limit allows.
func TxRateLimiter() *RateLimiter {
	return &RateLimiter{Bandwidth: &TokenBucket{
		Size:         TxBucketBytes,
		RefillTimeMs: TxBucketBytes * 1000 / TxRateBytesPerS,
	}}
}
