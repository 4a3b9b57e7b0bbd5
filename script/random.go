package script

// rand48 is Redis's redisLrand48 (src/rand.c): the 48-bit linear congruential
// generator of drand48, the same sequence on every platform. Each run starts
// from the state a Redis 7.0 server starts with, so a script's math.random
// sequence is the same on every run and every sidecar (a run that is started
// again, as a script that writes is, draws the same numbers), and
// math.randomseed(n) reseeds it as Redis does.
type rand48 struct{ x [3]uint32 }

const (
	rand48X0, rand48X1, rand48X2 = 0x330E, 0xABCD, 0x1234
	rand48A                      = 0x5DEECE66D
	rand48C                      = 0xB
	rand48Max                    = 1<<31 - 1 // REDIS_LRAND48_MAX, INT32_MAX
)

func (r *rand48) reset() { r.x = [3]uint32{rand48X0, rand48X1, rand48X2} }

// seed is redisSrand48: x = {X0, low 16 bits, high 16 bits} of the seed.
func (r *rand48) seed(v int32) {
	u := uint32(v)
	r.x = [3]uint32{rand48X0, u & 0xFFFF, u >> 16}
}

// next is redisLrand48: advance x = a*x + c mod 2^48, return its top 31 bits.
func (r *rand48) next() int32 {
	x := uint64(r.x[2])<<32 | uint64(r.x[1])<<16 | uint64(r.x[0])
	x = (x*rand48A + rand48C) & (1<<48 - 1)
	r.x = [3]uint32{uint32(x & 0xFFFF), uint32(x >> 16 & 0xFFFF), uint32(x >> 32 & 0xFFFF)}
	return int32(r.x[2])<<15 + int32(r.x[1]>>1)
}

// float is the r of redis_math_random: (lrand48() % MAX) / MAX, in [0, 1).
func (r *rand48) float() float64 {
	return float64(r.next()%rand48Max) / float64(rand48Max)
}
