/*
 * The int8 (Q8_0) matmul kernel: rows [begin, end) of W (d, n) int8 @ x (n,) int8 -> out (d,),
 * with llama2.c's runq.c arithmetic, bit for bit.
 *
 * runq.c computes each row as one running float sum, group after group:
 *
 *     for each group g of group_size values:
 *         ival = exact int32 dot product of the group's int8 values
 *         val += ((float) ival) * w_scale[g] * x_scale[g]      (left to right: two products)
 *
 * Integer sums do not depend on their order, so the dot products are free to use SIMD lanes in any
 * arrangement. The float side is kept in runq.c's order: one sum per row, one group at a time, the
 * two scale products in that order. Four rows run at once in the four float lanes of a vector
 * (each lane is its own sequential sum, so this changes no rounding).
 *
 * This header is freestanding (no libc): wasm/run.c includes it for the native and the emcc
 * builds, and wasm/relaxed.c includes it to build the same kernel with relaxed SIMD by clang, as
 * a small module that shares the engine's memory (see tasks.py). The only thing that differs
 * between the builds is how 16 int8 products are summed (Q8_DOT below):
 *   Q8_RELAXED   WebAssembly relaxed SIMD: i32x4.relaxed_dot_i8x16_i7x16_add, one instruction
 *   __wasm_simd128__  WebAssembly SIMD128: widen to int16, i32x4.dot_i16x8
 *   __SSE2__     native x86-64: widen to int16, pmaddwd
 *   otherwise    plain C
 */

#ifndef L2C_Q8_H
#define L2C_Q8_H

#include <stdint.h>

typedef int32_t q8_v4i __attribute__((vector_size(16)));
typedef float q8_v4f __attribute__((vector_size(16)));

static inline float q8_load_float(const float* p) {
    float v;
    __builtin_memcpy(&v, p, sizeof(v)); /* scales sit after the int8 values: may be unaligned */
    return v;
}

/*
 * The kernel for groups of 16 values and more reads x prepared once per matmul, not once per block
 * of four rows: Q8_PREPARED_BYTES for each 16 values, in the layout its inner loop loads
 * (q8_prepare_input; the engine keeps it in its run state). On a stories15M-shaped int8 model,
 * one thread, greedy, six paired runs each: the page's tokens/s 1.06x (0.96-1.10) with the relaxed
 * kernel, the command line's 1.06x (1.03-1.09).
 */
#define Q8_PREPARED_BYTES 32

/* Whether groups of gs values take the wide kernel, the one that reads the prepared input. */
static inline int q8_wide(int gs) { return gs % 16 == 0; }

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
/*
 * The relaxed kernel's input (see Q8_RELAXED): x as its positive and negative parts, max(x, 0) and
 * max(-x, 0). SIMD128 alone makes them, so the Emscripten-built engine (no relaxed SIMD) prepares
 * x for that kernel too: per 16 values, the 16 positive parts, then the 16 negative ones.
 */
static inline v128_t q8_positive(v128_t x) { return wasm_i8x16_max(x, wasm_i8x16_splat(0)); }
static inline v128_t q8_negative(v128_t x) {
    return wasm_i8x16_max(wasm_i8x16_neg(x), wasm_i8x16_splat(0));
}
static inline void q8_prepare_relaxed(unsigned char* out, const int8_t* x, int n) {
    for (int c = 0; c < n / 16; c++) {
        v128_t v = wasm_v128_load(x + 16 * c);
        wasm_v128_store(out + Q8_PREPARED_BYTES * c, q8_positive(v));
        wasm_v128_store(out + Q8_PREPARED_BYTES * c + 16, q8_negative(v));
    }
}
#endif

/*
 * Q8_DOT: 16 int8 values of x against 16 of a weight row.
 *   q8_x    x prepared once per 16 values (shared by every row of a block)
 *   q8_acc  a running sum of products, exact in int32 lanes
 * q8_quads(x, w) gives lane k = the sum of products of values 4k .. 4k+3: with groups of 4 (the
 * 260K model's), a lane is a group.
 */
#if defined(Q8_RELAXED)
/*
 * relaxed_dot_i8x16_i7x16(a, b) is exact only when every b is in [0, 127] (x86 implements it with
 * pmaddubsw, which reads b unsigned and saturates pairs at int16). So x goes in as two non-negative
 * halves, x = max(x, 0) - max(-x, 0), and the weights, full int8 range, as a:
 * w . x = relaxed_dot(w, x+) - relaxed_dot(w, x-). Pair sums stay within int16 (2 x 128 x 127).
 * quantized x is in [-127, 127] (round(x / (max|x| / 127))), so -x never overflows.
 */
typedef struct { v128_t pos, neg; } q8_x;
typedef struct { v128_t pos, neg; } q8_acc;
static inline q8_x q8_prepare(const int8_t* x) {
    v128_t v = wasm_v128_load(x);
    return (q8_x){q8_positive(v), q8_negative(v)};
}
static inline q8_x q8_load_prepared(const unsigned char* p) {
    return (q8_x){wasm_v128_load(p), wasm_v128_load(p + 16)};
}
static inline void q8_prepare_input(unsigned char* out, const int8_t* x, int n) {
    q8_prepare_relaxed(out, x, n);
}
static inline q8_acc q8_zero(void) { return (q8_acc){wasm_i32x4_splat(0), wasm_i32x4_splat(0)}; }
static inline q8_acc q8_madd(q8_acc acc, q8_x x, const int8_t* w) {
    v128_t vw = wasm_v128_load(w);
    acc.pos = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(vw, x.pos, acc.pos);
    acc.neg = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(vw, x.neg, acc.neg);
    return acc;
}
static inline q8_v4i q8_total(q8_acc acc) { return (q8_v4i)wasm_i32x4_sub(acc.pos, acc.neg); }
static inline q8_v4i q8_quads(q8_x x, const int8_t* w) { return q8_total(q8_madd(q8_zero(), x, w)); }
#define Q8_KERNEL_NAME "relaxed SIMD"

#elif defined(__wasm_simd128__)
typedef struct { v128_t lo, hi; } q8_x; /* x widened to int16 */
typedef v128_t q8_acc;
static inline q8_x q8_prepare(const int8_t* x) {
    v128_t v = wasm_v128_load(x);
    return (q8_x){wasm_i16x8_extend_low_i8x16(v), wasm_i16x8_extend_high_i8x16(v)};
}
static inline q8_x q8_load_prepared(const unsigned char* p) { /* 16 values as int16 */
    return (q8_x){wasm_v128_load(p), wasm_v128_load(p + 16)};
}
static inline void q8_store_prepared(unsigned char* p, q8_x x) {
    wasm_v128_store(p, x.lo);
    wasm_v128_store(p + 16, x.hi);
}
static inline q8_acc q8_zero(void) { return wasm_i32x4_splat(0); }
/* lane k of each dot: the products of values 2k and 2k + 1 of its half */
static inline q8_v4i q8_pairs_lo(q8_x x, v128_t w) {
    return (q8_v4i)wasm_i32x4_dot_i16x8(x.lo, wasm_i16x8_extend_low_i8x16(w));
}
static inline q8_v4i q8_pairs_hi(q8_x x, v128_t w) {
    return (q8_v4i)wasm_i32x4_dot_i16x8(x.hi, wasm_i16x8_extend_high_i8x16(w));
}
static inline q8_acc q8_madd(q8_acc acc, q8_x x, const int8_t* w) {
    v128_t vw = wasm_v128_load(w);
    return wasm_i32x4_add(acc, (v128_t)(q8_pairs_lo(x, vw) + q8_pairs_hi(x, vw)));
}
static inline q8_v4i q8_total(q8_acc acc) { return (q8_v4i)acc; }
static inline q8_v4i q8_quads(q8_x x, const int8_t* w) {
    v128_t vw = wasm_v128_load(w);
    q8_v4i lo = q8_pairs_lo(x, vw), hi = q8_pairs_hi(x, vw);
    return __builtin_shufflevector(lo, hi, 0, 2, 4, 6) + __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
}
#define Q8_KERNEL_NAME "SIMD128"

#elif defined(__SSE2__)
#include <emmintrin.h>
typedef struct { __m128i lo, hi; } q8_x; /* x widened to int16 */
typedef q8_v4i q8_acc;
/* int8 -> int16: interleave each byte with itself, then shift right arithmetically */
static inline __m128i q8_widen_lo(__m128i v) { return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8); }
static inline __m128i q8_widen_hi(__m128i v) { return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8); }
static inline q8_x q8_prepare(const int8_t* x) {
    __m128i v = _mm_loadu_si128((const __m128i*)x);
    return (q8_x){q8_widen_lo(v), q8_widen_hi(v)};
}
static inline q8_x q8_load_prepared(const unsigned char* p) { /* 16 values as int16 */
    return (q8_x){_mm_loadu_si128((const __m128i*)p), _mm_loadu_si128((const __m128i*)(p + 16))};
}
static inline void q8_store_prepared(unsigned char* p, q8_x x) {
    _mm_storeu_si128((__m128i*)p, x.lo);
    _mm_storeu_si128((__m128i*)(p + 16), x.hi);
}
static inline q8_acc q8_zero(void) { return (q8_acc){0, 0, 0, 0}; }
static inline q8_acc q8_madd(q8_acc acc, q8_x x, const int8_t* w) {
    __m128i vw = _mm_loadu_si128((const __m128i*)w);
    return acc + (q8_v4i)_mm_add_epi32(_mm_madd_epi16(x.lo, q8_widen_lo(vw)),
                                       _mm_madd_epi16(x.hi, q8_widen_hi(vw)));
}
static inline q8_v4i q8_total(q8_acc acc) { return acc; }
static inline q8_v4i q8_quads(q8_x x, const int8_t* w) {
    __m128i vw = _mm_loadu_si128((const __m128i*)w);
    q8_v4i lo = (q8_v4i)_mm_madd_epi16(x.lo, q8_widen_lo(vw));
    q8_v4i hi = (q8_v4i)_mm_madd_epi16(x.hi, q8_widen_hi(vw));
    return __builtin_shufflevector(lo, hi, 0, 2, 4, 6) + __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
}
#define Q8_KERNEL_NAME "SSE2"

#else
typedef struct { const int8_t* p; } q8_x;
typedef q8_v4i q8_acc;
static inline q8_x q8_prepare(const int8_t* x) { return (q8_x){x}; }
static inline q8_x q8_load_prepared(const unsigned char* p) { return (q8_x){(const int8_t*)p}; }
static inline void q8_store_prepared(unsigned char* p, q8_x x) { __builtin_memcpy(p, x.p, 16); }
static inline q8_acc q8_zero(void) { return (q8_acc){0, 0, 0, 0}; }
static inline q8_v4i q8_quads(q8_x x, const int8_t* w) {
    q8_v4i sum = {0, 0, 0, 0};
    for (int i = 0; i < 16; i++) sum[i / 4] += (int32_t)x.p[i] * w[i];
    return sum;
}
static inline q8_acc q8_madd(q8_acc acc, q8_x x, const int8_t* w) { return acc + q8_quads(x, w); }
static inline q8_v4i q8_total(q8_acc acc) { return acc; }
#define Q8_KERNEL_NAME "plain C"
#endif

#if !defined(Q8_RELAXED)
/* x (n,) prepared for this kernel: n / 16 chunks of Q8_PREPARED_BYTES (q8_load_prepared). */
static inline void q8_prepare_input(unsigned char* out, const int8_t* x, int n) {
    for (int c = 0; c < n / 16; c++) {
        q8_store_prepared(out + Q8_PREPARED_BYTES * c, q8_prepare(x + 16 * c));
    }
}
#endif

/* [sum of a, sum of b, sum of c, sum of d]: four rows' lanes added up, in one vector. */
static inline q8_v4i q8_sum4(q8_v4i a, q8_v4i b, q8_v4i c, q8_v4i d) {
    q8_v4i ab = __builtin_shufflevector(a, b, 0, 4, 1, 5) + __builtin_shufflevector(a, b, 2, 6, 3, 7);
    q8_v4i cd = __builtin_shufflevector(c, d, 0, 4, 1, 5) + __builtin_shufflevector(c, d, 2, 6, 3, 7);
    return __builtin_shufflevector(ab, cd, 0, 1, 4, 5) + __builtin_shufflevector(ab, cd, 2, 3, 6, 7);
}

/* One group's exact dot product, one value at a time (groups the vector paths do not cover). */
static inline int32_t q8_dot_plain(const int8_t* x, const int8_t* w, int count) {
    int32_t sum = 0;
    for (int k = 0; k < count; k++) sum += (int32_t)x[k] * w[k];
    return sum;
}

/* One group's exact dot product: in vectors when it is whole vectors, else one value at a time. */
static inline int32_t q8_group_dot(const int8_t* x, const int8_t* w, int gs) {
    if (gs % 16) return q8_dot_plain(x, w, gs);
    q8_acc a = q8_zero();
    for (int j = 0; j < gs; j += 16) a = q8_madd(a, q8_prepare(x + j), w + j);
    q8_v4i t = q8_total(a);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* Rows one at a time: any group size (and the rows q8_rows_wide leaves over). */
static void q8_rows_one_by_one(float* out, const int8_t* xq, const float* xs, const int8_t* wq,
                               const float* ws, int n, int gs, int begin, int end) {
    int groups = n / gs;
    for (int i = begin; i < end; i++) {
        const int8_t* w = wq + (int64_t)i * n;
        float val = 0.0f;
        for (int g = 0; g < groups; g++) {
            int32_t ival = q8_group_dot(xq + g * gs, w + g * gs, gs);
            val += ((float)ival) * q8_load_float(ws + (int64_t)i * groups + g) * xs[g];
        }
        out[i] = val;
    }
}

/*
 * Groups of a multiple of 16 values (group size 32 or 64: every published model's): rows four at
 * a time, float lane r holding row i + r's sum.
 */
static void q8_rows_wide(float* out, const int8_t* xq, const unsigned char* prepared,
                         const float* xs, const int8_t* wq, const float* ws, int n, int gs,
                         int begin, int end) {
    int groups = n / gs;
    int i = begin;
    for (; i + 4 <= end; i += 4) {
        const int8_t* w0 = wq + (int64_t)i * n;
        const int8_t *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
        const float* s0 = ws + (int64_t)i * groups; /* row i's scales; row i + r's at + r * groups */
        q8_v4f val = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int g = 0; g < groups; g++) {
            q8_acc a0 = q8_zero(), a1 = q8_zero(), a2 = q8_zero(), a3 = q8_zero();
            for (int j = g * gs; j < (g + 1) * gs; j += 16) {
                q8_x x = q8_load_prepared(prepared + Q8_PREPARED_BYTES * (j / 16));
                a0 = q8_madd(a0, x, w0 + j);
                a1 = q8_madd(a1, x, w1 + j);
                a2 = q8_madd(a2, x, w2 + j);
                a3 = q8_madd(a3, x, w3 + j);
            }
            q8_v4i ival = q8_sum4(q8_total(a0), q8_total(a1), q8_total(a2), q8_total(a3));
            q8_v4f wscale = {q8_load_float(s0 + g), q8_load_float(s0 + groups + g),
                             q8_load_float(s0 + 2 * groups + g), q8_load_float(s0 + 3 * groups + g)};
            float xscale = xs[g];
            val = val + (__builtin_convertvector(ival, q8_v4f) * wscale) *
                            (q8_v4f){xscale, xscale, xscale, xscale};
        }
        __builtin_memcpy(out + i, &val, sizeof(val));
    }
    q8_rows_one_by_one(out, xq, xs, wq, ws, n, gs, i, end); /* rows after the last block of 4 */
}

/*
 * Groups of a multiple of 4 values that are not whole vectors (the 260K model's groups of 4, over
 * n = 64 or 172): 16 values give four sums of four (q8_quads), and each group takes gs / 4 of
 * them; the last n % 16 values are summed plainly.
 */
static void q8_rows_quads(float* out, const int8_t* xq, const float* xs, const int8_t* wq,
                          const float* ws, int n, int gs, int begin, int end) {
    int groups = n / gs;
    for (int i = begin; i < end; i++) {
        const int8_t* w = wq + (int64_t)i * n;
        const float* s = ws + (int64_t)i * groups;
        float val = 0.0f;
        int32_t ival = 0;
        int g = 0, left = gs; /* values of group g still to add */
        for (int j = 0; j < n; j += 16) {
            q8_v4i quads;
            if (j + 16 <= n) {
                quads = q8_quads(q8_prepare(xq + j), w + j);
            } else {
                for (int k = 0; k < 4; k++) {
                    quads[k] = j + 4 * k < n ? q8_dot_plain(xq + j + 4 * k, w + j + 4 * k, 4) : 0;
                }
            }
            for (int k = 0; k < 4 && j + 4 * k < n; k++) {
                ival += quads[k];
                left -= 4;
                if (left == 0) { /* group g is complete */
                    val += ((float)ival) * q8_load_float(s + g) * xs[g];
                    g++;
                    ival = 0;
                    left = gs;
                }
            }
        }
        out[i] = val;
    }
}


/*
 * W (d, n) int8 @ x (n,) int8 -> out (d,), rows [begin, end). wq: the matrix's int8 values,
 * row-major; ws: its scales, one per gs values, row-major (may be unaligned); xq, xs: the input
 * quantized with the same group size; prepared: q8_prepare_input(xq) when q8_wide(gs) (else
 * unread). n is a multiple of gs.
 */
static inline void q8_matmul_rows(float* out, const int8_t* xq, const unsigned char* prepared,
                                  const float* xs, const int8_t* wq, const float* ws, int n, int gs,
                                  int begin, int end) {
    if (q8_wide(gs)) q8_rows_wide(out, xq, prepared, xs, wq, ws, n, gs, begin, end);
    else if (gs % 4 == 0) q8_rows_quads(out, xq, xs, wq, ws, n, gs, begin, end);
    else q8_rows_one_by_one(out, xq, xs, wq, ws, n, gs, begin, end);
}

#endif /* L2C_Q8_H */
