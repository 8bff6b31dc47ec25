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
 * (each lane is its own sequential sum, so this changes no rounding), and in the integer lanes too
 * (the interleaved layout below).
 *
 * This header is freestanding (no libc): wasm/run.c includes it for the native and the emcc
 * builds, and wasm/relaxed.c includes it to build the same kernel with relaxed SIMD by clang, as
 * a small module that shares the engine's memory (see tasks.py). The only thing that differs
 * between the builds is how 16 int8 products are summed (q8_madd4 below):
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
 * The kernel for groups of 16 values and more ("wide": every published model's groups of 32 or 64)
 * reads the weights in an interleaved layout, made in place at load (q8_interleave): each block of
 * four rows, column quad by column quad, block[16 * c + 4 * r + t] = W[i + r][4 * c + t]. One
 * 16-byte load then holds four values of each of four rows, and a dot product with x's quad in
 * every lane leaves row r's sum in lane r: no sum across lanes per group. Rows after the last
 * whole block keep the row-major layout.
 *
 * It reads x prepared once per matmul (q8_prepare_input; the engine keeps it in its run state): for
 * each quad of x, Q8_QUAD_BYTES in the form its inner loop loads. Q8_PREPARED_BYTES is the most any
 * kernel needs for 16 values, for the engine's allocation.
 */
#define Q8_PREPARED_BYTES 128

/* Whether groups of gs values take the wide kernel (and its interleaved weights). */
static inline int q8_wide(int gs) { return gs % 16 == 0; }

/* Rewrites the whole blocks of four rows of an int8 matrix (d, n), n a multiple of 4, into the
 * wide kernel's layout, in place. tmp: 4 * n bytes. */
static inline void q8_interleave(int8_t* w, int d, int n, int8_t* tmp) {
    for (int i = 0; i + 4 <= d; i += 4) {
        int8_t* block = w + (long long)i * n;
        __builtin_memcpy(tmp, block, (unsigned long)4 * n);
        for (int c = 0; c < n / 4; c++)
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < 4; t++) block[16 * c + 4 * r + t] = tmp[r * n + 4 * c + t];
    }
}

/* Element j of row i of an int8 (d, n) matrix in the wide kernel's layout. */
static inline int8_t q8_interleaved_at(const int8_t* w, int d, int n, int i, int j) {
    if (i >= d - d % 4) return w[(long long)i * n + j];
    return w[(long long)(i - i % 4) * n + 16 * (j / 4) + 4 * (i % 4) + j % 4];
}

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
/*
 * The relaxed kernel's input (see Q8_RELAXED): each quad of x in all four lanes, as its positive
 * and negative parts, max(x, 0) and max(-x, 0): 32 bytes a quad. SIMD128 alone makes them, so
 * the Emscripten-built engine (no relaxed SIMD) prepares x for that kernel too.
 */
#define Q8_RELAXED_QUAD_BYTES 32
static inline v128_t q8_positive(v128_t x) { return wasm_i8x16_max(x, wasm_i8x16_splat(0)); }
static inline v128_t q8_negative(v128_t x) {
    return wasm_i8x16_max(wasm_i8x16_neg(x), wasm_i8x16_splat(0));
}
static inline void q8_prepare_relaxed(unsigned char* out, const int8_t* x, int n) {
    for (int c = 0; c < n / 4; c++) {
        int32_t quad;
        __builtin_memcpy(&quad, x + 4 * c, 4);
        v128_t v = wasm_i32x4_splat(quad);
        wasm_v128_store(out + Q8_RELAXED_QUAD_BYTES * c, q8_positive(v));
        wasm_v128_store(out + Q8_RELAXED_QUAD_BYTES * c + 16, q8_negative(v));
    }
}
#endif

/*
 * The wide kernel's step, per target: q8_madd4(acc, x, w) adds the products of one column quad of
 * a block (16 bytes at w) with x's quad, row r's in lane r; q8_rows4(acc) gives the four rows'
 * exact int32 sums.
 *   q8_x4   x's quad, prepared (q8_load_quad from the prepared input)
 *   q8_acc  running sums, exact in int32 lanes
 */
#if defined(Q8_RELAXED)
/*
 * relaxed_dot_i8x16_i7x16(a, b) is exact only when every b is in [0, 127] (x86 implements it with
 * pmaddubsw, which reads b unsigned and saturates pairs at int16). So x goes in as two non-negative
 * halves, x = max(x, 0) - max(-x, 0), and the weights, full int8 range, as a:
 * w . x = relaxed_dot(w, x+) - relaxed_dot(w, x-). Pair sums stay within int16 (2 x 128 x 127).
 * quantized x is in [-127, 127] (round(x / (max|x| / 127))), so -x never overflows.
 */
#define Q8_QUAD_BYTES Q8_RELAXED_QUAD_BYTES
typedef struct { v128_t pos, neg; } q8_x4;
typedef struct { v128_t pos, neg; } q8_acc;
static inline q8_x4 q8_load_quad(const unsigned char* p) {
    return (q8_x4){wasm_v128_load(p), wasm_v128_load(p + 16)};
}
static inline void q8_prepare_input(unsigned char* out, const int8_t* x, int n) {
    q8_prepare_relaxed(out, x, n);
}
static inline q8_acc q8_zero(void) { return (q8_acc){wasm_i32x4_splat(0), wasm_i32x4_splat(0)}; }
static inline q8_acc q8_madd4(q8_acc acc, q8_x4 x, const int8_t* w) {
    v128_t vw = wasm_v128_load(w);
    acc.pos = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(vw, x.pos, acc.pos);
    acc.neg = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(vw, x.neg, acc.neg);
    return acc;
}
static inline q8_v4i q8_rows4(q8_acc acc) { return (q8_v4i)wasm_i32x4_sub(acc.pos, acc.neg); }
#define Q8_KERNEL_NAME "relaxed SIMD"
#else
/* The other targets read each quad of x as int16, twice: x0 x1 x2 x3 x0 x1 x2 x3. */
#define Q8_QUAD_BYTES 16
static inline void q8_prepare_input(unsigned char* out, const int8_t* x, int n) {
    for (int c = 0; c < n / 4; c++) {
        int16_t twice[8];
        for (int t = 0; t < 8; t++) twice[t] = x[4 * c + t % 4];
        __builtin_memcpy(out + Q8_QUAD_BYTES * c, twice, sizeof(twice));
    }
}
#if defined(__wasm_simd128__)
typedef v128_t q8_x4;
typedef struct { v128_t lo, hi; } q8_acc; /* rows 0 and 1 in lo, 2 and 3 in hi, two lanes each */
static inline q8_x4 q8_load_quad(const unsigned char* p) { return wasm_v128_load(p); }
static inline q8_acc q8_zero(void) { return (q8_acc){wasm_i32x4_splat(0), wasm_i32x4_splat(0)}; }
static inline q8_acc q8_madd4(q8_acc acc, q8_x4 x, const int8_t* w) {
    v128_t vw = wasm_v128_load(w);
    acc.lo = wasm_i32x4_add(acc.lo, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(vw), x));
    acc.hi = wasm_i32x4_add(acc.hi, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(vw), x));
    return acc;
}
static inline q8_v4i q8_rows4(q8_acc acc) {
    q8_v4i lo = (q8_v4i)acc.lo, hi = (q8_v4i)acc.hi;
    return __builtin_shufflevector(lo, hi, 0, 2, 4, 6) + __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
}
#define Q8_KERNEL_NAME "SIMD128"
#elif defined(__SSE2__)
#include <emmintrin.h>
typedef __m128i q8_x4;
typedef struct { q8_v4i lo, hi; } q8_acc; /* rows 0 and 1 in lo, 2 and 3 in hi, two lanes each */
/* int8 -> int16: interleave each byte with itself, then shift right arithmetically */
static inline __m128i q8_widen_lo(__m128i v) { return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8); }
static inline __m128i q8_widen_hi(__m128i v) { return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8); }
static inline q8_x4 q8_load_quad(const unsigned char* p) {
    return _mm_loadu_si128((const __m128i*)p);
}
static inline q8_acc q8_zero(void) { return (q8_acc){{0, 0, 0, 0}, {0, 0, 0, 0}}; }
static inline q8_acc q8_madd4(q8_acc acc, q8_x4 x, const int8_t* w) {
    __m128i vw = _mm_loadu_si128((const __m128i*)w);
    acc.lo += (q8_v4i)_mm_madd_epi16(q8_widen_lo(vw), x);
    acc.hi += (q8_v4i)_mm_madd_epi16(q8_widen_hi(vw), x);
    return acc;
}
static inline q8_v4i q8_rows4(q8_acc acc) {
    return __builtin_shufflevector(acc.lo, acc.hi, 0, 2, 4, 6) +
           __builtin_shufflevector(acc.lo, acc.hi, 1, 3, 5, 7);
}
#define Q8_KERNEL_NAME "SSE2"
#else
typedef const unsigned char* q8_x4;
typedef q8_v4i q8_acc;
static inline q8_x4 q8_load_quad(const unsigned char* p) { return p; }
static inline q8_acc q8_zero(void) { return (q8_acc){0, 0, 0, 0}; }
static inline q8_acc q8_madd4(q8_acc acc, q8_x4 x, const int8_t* w) {
    int16_t xs[4];
    __builtin_memcpy(xs, x, sizeof(xs));
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 4; t++) acc[r] += (int32_t)xs[t] * w[4 * r + t];
    return acc;
}
static inline q8_v4i q8_rows4(q8_acc acc) { return acc; }
#define Q8_KERNEL_NAME "plain C"
#endif
#endif

/* One group's exact dot product, one value at a time. */
static inline int32_t q8_dot_plain(const int8_t* x, const int8_t* w, int count) {
    int32_t sum = 0;
    for (int k = 0; k < count; k++) sum += (int32_t)x[k] * w[k];
    return sum;
}

/* Row-major rows one at a time: any group size (the 260K model's groups of 4), and the rows after
 * the wide kernel's last whole block. */
static void q8_rows_one_by_one(float* out, const int8_t* xq, const float* xs, const int8_t* wq,
                               const float* ws, int n, int gs, int begin, int end) {
    int groups = n / gs;
    for (int i = begin; i < end; i++) {
        const int8_t* w = wq + (long long)i * n;
        float val = 0.0f;
        for (int g = 0; g < groups; g++) {
            int32_t ival = q8_dot_plain(xq + g * gs, w + g * gs, gs);
            val += ((float)ival) * q8_load_float(ws + (long long)i * groups + g) * xs[g];
        }
        out[i] = val;
    }
}

/*
 * Groups of a multiple of 16 values, weights interleaved (q8_interleave): a block of four rows at a
 * time, float lane r holding row i + r's sum, one group after another as runq.c adds them. On a
 * stories15M-shaped int8 model, one thread, greedy, against four row-major rows at a time (whose
 * per-group sums across lanes took about a quarter of the kernel): the command line 1.38-1.65x
 * the tokens/s (three paired runs), the page 1.33x (four, 1.13-1.69x).
 */
static void q8_rows_wide(float* out, const int8_t* xq, const unsigned char* prepared,
                         const float* xs, const int8_t* wq, const float* ws, int n, int gs,
                         int begin, int end) {
    int groups = n / gs, quads = gs / 4;
    int i = begin;
    for (; i + 4 <= end; i += 4) {
        const int8_t* block = wq + (long long)i * n;
        const float* s0 = ws + (long long)i * groups; /* row i's scales; row i + r's at + r * groups */
        q8_v4f val = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int g = 0; g < groups; g++) {
            q8_acc a = q8_zero();
            for (int c = g * quads; c < (g + 1) * quads; c++)
                a = q8_madd4(a, q8_load_quad(prepared + Q8_QUAD_BYTES * c), block + 16 * c);
            q8_v4i ival = q8_rows4(a);
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
 * W (d, n) int8 @ x (n,) int8 -> out (d,), rows [begin, end) (begin a multiple of 4). wq: the
 * matrix's int8 values, interleaved by q8_interleave when q8_wide(gs), else row-major; ws: its
 * scales, one per gs values, row-major (may be unaligned); xq, xs: the input quantized with the
 * same group size; prepared: q8_prepare_input(xq) when q8_wide(gs) (else unread). n is a multiple
 * of gs.
 */
static inline void q8_matmul_rows(float* out, const int8_t* xq, const unsigned char* prepared,
                                  const float* xs, const int8_t* wq, const float* ws, int n, int gs,
                                  int begin, int end) {
    if (q8_wide(gs)) q8_rows_wide(out, xq, prepared, xs, wq, ws, n, gs, begin, end);
    else q8_rows_one_by_one(out, xq, xs, wq, ws, n, gs, begin, end);
}

#endif /* L2C_Q8_H */
