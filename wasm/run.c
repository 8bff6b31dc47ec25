/*
 * llama2c-web engine: the Llama-2 transformer forward pass, in one C11 file.
 *
 * The same source builds two ways:
 *   gcc  -> a shared library that the Python package loads with ctypes (the command line, the tests)
 *   emcc -> a WebAssembly module that the browser worker drives (the page, the widget)
 *
 * The engine does no file I/O. The caller hands the engine a writable buffer holding the checkpoint
 * (a private mmap natively, the downloaded bytes in WebAssembly memory in the browser). The engine
 * checks every size against those bytes before it touches any weight, and never aborts: each failure
 * is an error code plus a message from l2c_last_error(). Once loaded, the engine uses the buffer in
 * place, as its only copy of the weights, and rearranges fp32 matrices there for its kernel.
 *
 * For fp32 models, arithmetic follows llama2.c's run.c operation for operation (same summation
 * order, no fused multiply-add), so logits are bit-identical to run.c's and sampled text is
 * byte-identical. The matmul gets its speed from SIMD lanes that each compute a whole row, in order,
 * and from threads that each compute whole rows. int8 models (llama2.c's Q8_0 export) follow
 * runq.c's arithmetic.
 *
 * Sections, in the order data flows:
 *   1. the exported API and error codes
 *   2. the checkpoint: header, validation, weight pointers
 *   3. the run state (activations and KV cache)
 *   4. the math kernels
 *   5. threads
 *   6. the forward pass
 *   7. the exported functions
 */

#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __EMSCRIPTEN__
#include <emscripten/emscripten.h>
#define L2C_API EMSCRIPTEN_KEEPALIVE
#else
#define L2C_API __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------------------------------------
 * 1. Error codes. l2c_last_error() returns the message of the most recent failure.
 */

enum {
    L2C_OK = 0,
    L2C_ERR_ARGUMENT = 1,  /* a NULL pointer or a bad argument to the API */
    L2C_ERR_TRUNCATED = 2, /* the buffer is shorter than a header */
    L2C_ERR_HEADER = 3,    /* a header value is out of bounds or inconsistent */
    L2C_ERR_SIZE = 4,      /* the buffer length differs from what the header implies */
    L2C_ERR_NOMEM = 5,     /* the run state could not be allocated */
    L2C_ERR_RANGE = 6,     /* a token id or position out of range */
};

static char g_error[256] = "";
static int g_error_code = L2C_OK;

/* Records an error message and returns its code. */
__attribute__((format(printf, 2, 3)))
static int fail(int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof(g_error), fmt, ap);
    va_end(ap);
    g_error_code = code;
    return code;
}

/* ---------------------------------------------------------------------------------------------
 * 2. The checkpoint. Two formats, told apart by their first four bytes.
 *
 * fp32, llama2.c's legacy format ("version 0"):
 *   header: 7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *                      (vocab_size < 0 means the classifier is unshared and stored last)
 *   then fp32 tensors, each row-major:
 *     token_embedding   (vocab_size, dim)
 *     rms_att           (n_layers, dim)
 *     wq                (n_layers, dim, dim)        rows are outputs
 *     wk                (n_layers, kv_dim, dim)
 *     wv                (n_layers, kv_dim, dim)
 *     wo                (n_layers, dim, dim)
 *     rms_ffn           (n_layers, dim)
 *     w1                (n_layers, hidden_dim, dim)
 *     w2                (n_layers, dim, hidden_dim)
 *     w3                (n_layers, hidden_dim, dim)
 *     rms_final         (dim,)
 *     freq_cis_real     (seq_len * head_size / 2,)  unused: RoPE is computed on the fly
 *     freq_cis_imag     (seq_len * head_size / 2,)  unused
 *     wcls              (vocab_size, dim)           only when unshared
 *
 * int8, llama2.c's "version 2" export (Q8_0: int8 values with one fp32 scale per group):
 *   header, 256 bytes: uint32 magic 0x616b3432 ("ak42"), int32 version 2, the 7 config int32s,
 *                      uint8 shared_classifier, int32 group_size, zero padding
 *   fp32: rms_att (n_layers, dim), rms_ffn (n_layers, dim), rms_final (dim,)
 *   then each quantized tensor as its int8 values followed by its scales (numel / group_size):
 *     token_embedding (vocab_size, dim); per layer wq; per layer wk; per layer wv; per layer wo;
 *     per layer w1; per layer w2; per layer w3; wcls (vocab_size, dim) only when unshared
 */

typedef struct {
    int dim;        /* transformer width */
    int hidden_dim; /* FFN width */
    int n_layers;
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads (< n_heads for grouped-query attention) */
    int vocab_size;
    int seq_len;    /* maximum sequence length */
} Config;

enum { FORMAT_FP32 = 0, FORMAT_INT8 = 2 }; /* the llama2.c export versions */

#define LEGACY_HEADER_BYTES 28
#define V2_HEADER_BYTES 256
#define V2_MAGIC 0x616b3432u

typedef struct {
    Config config;
    int format;      /* FORMAT_FP32 or FORMAT_INT8 */
    int shared;      /* the classifier is the token embedding */
    int group_size;  /* int8: values per scale */
    int64_t header;  /* bytes before the weights */
} Layout;

/* One weight matrix (d, n): fp32 values, or int8 values with a scale per group_size values. */
typedef struct {
    const float* f;  /* fp32 weights, or NULL for int8 */
    const int8_t* q; /* int8 weights */
    const float* s;  /* int8 scales (read with memcpy: they may be unaligned) */
} Matrix;

typedef struct {
    Matrix token_embedding; /* (vocab_size, dim) */
    const float* rms_att;   /* (n_layers, dim) */
    const float* rms_ffn;   /* (n_layers, dim) */
    const float* rms_final; /* (dim,) */
    Matrix* wq;             /* n_layers x (dim, dim) */
    Matrix* wk;             /* n_layers x (kv_dim, dim) */
    Matrix* wv;             /* n_layers x (kv_dim, dim) */
    Matrix* wo;             /* n_layers x (dim, dim) */
    Matrix* w1;             /* n_layers x (hidden_dim, dim) */
    Matrix* w2;             /* n_layers x (dim, hidden_dim) */
    Matrix* w3;             /* n_layers x (hidden_dim, dim) */
    Matrix wcls;            /* (vocab_size, dim) */
} Weights;

/* Upper bounds far above any llama2.c model yet small enough that every size below fits int64. */
#define MAX_DIM (1 << 16)
#define MAX_HIDDEN (1 << 18)
#define MAX_LAYERS (1 << 10)
#define MAX_VOCAB (1 << 20)
#define MAX_SEQ (1 << 20)

static int check_config(const Config* cfg, int32_t vocab_field) {
    struct { const char* name; int32_t value; int32_t max; } fields[] = {
        {"dim", cfg->dim, MAX_DIM},           {"hidden_dim", cfg->hidden_dim, MAX_HIDDEN},
        {"n_layers", cfg->n_layers, MAX_LAYERS}, {"n_heads", cfg->n_heads, MAX_DIM},
        {"n_kv_heads", cfg->n_kv_heads, MAX_DIM}, {"vocab_size", cfg->vocab_size, MAX_VOCAB},
        {"seq_len", cfg->seq_len, MAX_SEQ},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i].value <= 0 || fields[i].value > fields[i].max) {
            return fail(L2C_ERR_HEADER, "bad header: %s = %d (must be between 1 and %d)",
                        fields[i].name, (int)(i == 5 ? vocab_field : fields[i].value),
                        fields[i].max);
        }
    }
    if (cfg->dim % cfg->n_heads != 0) {
        return fail(L2C_ERR_HEADER, "bad header: dim %d is not divisible by n_heads %d", cfg->dim,
                    cfg->n_heads);
    }
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        return fail(L2C_ERR_HEADER, "bad header: n_heads %d is not divisible by n_kv_heads %d",
                    cfg->n_heads, cfg->n_kv_heads);
    }
    if ((cfg->dim / cfg->n_heads) % 2 != 0) {
        return fail(L2C_ERR_HEADER, "bad header: head size %d is odd (RoPE rotates pairs)",
                    cfg->dim / cfg->n_heads);
    }
    return L2C_OK;
}

/* Reads either header from the buffer and checks it. Returns L2C_OK and fills the layout. */
static int read_layout(const unsigned char* data, size_t size, Layout* out) {
    if (size < LEGACY_HEADER_BYTES) {
        return fail(L2C_ERR_TRUNCATED, "checkpoint is %zu bytes, shorter than its %d-byte header",
                    size, LEGACY_HEADER_BYTES);
    }
    uint32_t magic;
    memcpy(&magic, data, sizeof(magic)); /* little-endian, as llama2.c writes it */
    int32_t h[7];
    Layout l = {0};
    if (magic == V2_MAGIC) {
        if (size < V2_HEADER_BYTES) {
            return fail(L2C_ERR_TRUNCATED, "int8 checkpoint is %zu bytes, shorter than its "
                        "%d-byte header", size, V2_HEADER_BYTES);
        }
        int32_t version, group_size;
        memcpy(&version, data + 4, sizeof(version));
        if (version != 2) {
            return fail(L2C_ERR_HEADER, "unsupported checkpoint version %d (this engine reads the "
                        "legacy fp32 format and version 2, int8)", (int)version);
        }
        memcpy(h, data + 8, sizeof(h));
        memcpy(&group_size, data + 37, sizeof(group_size)); /* packed after the uint8 flag */
        l.format = FORMAT_INT8;
        l.shared = data[36];
        l.group_size = group_size;
        l.header = V2_HEADER_BYTES;
        if (l.shared > 1) {
            return fail(L2C_ERR_HEADER, "bad header: shared_classifier flag is %d", l.shared);
        }
    } else {
        memcpy(h, data, sizeof(h));
        l.format = FORMAT_FP32;
        l.shared = h[5] > 0;
        l.header = LEGACY_HEADER_BYTES;
    }
    Config* c = &l.config;
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->vocab_size = l.format == FORMAT_FP32 && h[5] < 0 && h[5] != INT32_MIN ? -h[5] : h[5];
    c->seq_len = h[6];
    int rc = check_config(c, h[5]);
    if (rc != L2C_OK) return rc;
    if (l.format == FORMAT_INT8 &&
        (l.group_size <= 0 || c->dim % l.group_size || c->hidden_dim % l.group_size)) {
        return fail(L2C_ERR_HEADER, "bad header: group size %d must divide dim %d and hidden_dim "
                    "%d", l.group_size, c->dim, c->hidden_dim);
    }
    *out = l;
    return L2C_OK;
}

/* Bytes of one matrix of numel values in this layout's format. */
static int64_t matrix_bytes(const Layout* l, int64_t numel) {
    if (l->format == FORMAT_FP32) return numel * (int64_t)sizeof(float);
    return numel + numel / l->group_size * (int64_t)sizeof(float);
}

/* The exact byte length the layout implies. */
static int64_t checkpoint_bytes(const Layout* l) {
    const Config* c = &l->config;
    int64_t dim = c->dim, hidden = c->hidden_dim, layers = c->n_layers, vocab = c->vocab_size;
    int64_t head_size = dim / c->n_heads;
    int64_t kv_dim = dim * c->n_kv_heads / c->n_heads;
    int64_t n = l->header;
    n += (2 * layers * dim + dim) * (int64_t)sizeof(float);       /* the rmsnorm weights */
    n += matrix_bytes(l, vocab * dim);                             /* token_embedding */
    n += layers * 2 * matrix_bytes(l, dim * dim);                  /* wq, wo */
    n += layers * 2 * matrix_bytes(l, kv_dim * dim);               /* wk, wv */
    n += layers * 3 * matrix_bytes(l, hidden * dim);               /* w1, w2, w3 */
    if (!l->shared) n += matrix_bytes(l, vocab * dim);             /* wcls */
    if (l->format == FORMAT_FP32) {
        n += 2 * (((int64_t)c->seq_len * head_size / 2) * (int64_t)sizeof(float)); /* freq_cis */
    }
    return n;
}

/* Takes the next matrix of numel values from *p. */
static Matrix next_matrix(const Layout* l, const unsigned char** p, int64_t numel) {
    Matrix m = {0};
    if (l->format == FORMAT_FP32) {
        m.f = (const float*)*p;
    } else {
        m.q = (const int8_t*)*p;
        m.s = (const float*)(*p + numel);
    }
    *p += matrix_bytes(l, numel);
    return m;
}

static const float* next_floats(const unsigned char** p, int64_t count) {
    const float* f = (const float*)*p;
    *p += count * (int64_t)sizeof(float);
    return f;
}

/* Points every weight into the checkpoint bytes (no copy). layer_matrices holds 7 * n_layers. */
static void map_weights(Weights* w, const Layout* l, const unsigned char* data,
                        Matrix* layer_matrices) {
    const Config* c = &l->config;
    int64_t dim = c->dim, hidden = c->hidden_dim, layers = c->n_layers;
    int64_t kv_dim = dim * c->n_kv_heads / c->n_heads;
    int64_t head_size = dim / c->n_heads;
    const unsigned char* p = data + l->header;
    Matrix** per_layer[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w1, &w->w2, &w->w3};
    int64_t numel[7] = {dim * dim, kv_dim * dim, kv_dim * dim, dim * dim, hidden * dim,
                        dim * hidden, hidden * dim};
    for (int i = 0; i < 7; i++) *per_layer[i] = layer_matrices + i * layers;

    if (l->format == FORMAT_FP32) { /* norms sit between the matrices */
        w->token_embedding = next_matrix(l, &p, c->vocab_size * dim);
        w->rms_att = next_floats(&p, layers * dim);
        for (int i = 0; i < 4; i++)
            for (int64_t k = 0; k < layers; k++) (*per_layer[i])[k] = next_matrix(l, &p, numel[i]);
        w->rms_ffn = next_floats(&p, layers * dim);
        for (int i = 4; i < 7; i++)
            for (int64_t k = 0; k < layers; k++) (*per_layer[i])[k] = next_matrix(l, &p, numel[i]);
        w->rms_final = next_floats(&p, dim);
        p += 2 * (((int64_t)c->seq_len * head_size / 2) * (int64_t)sizeof(float)); /* freq_cis */
    } else { /* the fp32 norms come first, then every quantized matrix */
        w->rms_att = next_floats(&p, layers * dim);
        w->rms_ffn = next_floats(&p, layers * dim);
        w->rms_final = next_floats(&p, dim);
        w->token_embedding = next_matrix(l, &p, c->vocab_size * dim);
        for (int i = 0; i < 7; i++)
            for (int64_t k = 0; k < layers; k++) (*per_layer[i])[k] = next_matrix(l, &p, numel[i]);
    }
    w->wcls = l->shared ? w->token_embedding : next_matrix(l, &p, c->vocab_size * dim);
}

/* ---------------------------------------------------------------------------------------------
 * 3. The run state: activations for one position, and the KV cache for all of them.
 */

/* The int8 matmul kernel (runq.c's arithmetic, SIMD integer dot products): section 4. */
#include "q8.h"

typedef struct {
    int8_t* q; /* (n,) int8 values */
    float* s;  /* (n / group_size,) scales */
    unsigned char* prepared; /* (n / 16 * Q8_PREPARED_BYTES,) q, as the kernel in use loads it */
} QuantizedVector;

typedef struct {
    float* x;      /* (dim,) the residual stream */
    float* xb;     /* (dim,) scratch: normed input, then attention output */
    float* xb2;    /* (dim,) scratch */
    float* hb;     /* (hidden_dim,) FFN scratch */
    float* hb2;    /* (hidden_dim,) FFN scratch */
    QuantizedVector xq; /* (max(dim, hidden_dim),) int8 models: a matmul input, quantized */
    float* q;      /* (dim,) queries for this position */
    float* att;    /* (n_heads, seq_len) attention scores */
    float* logits; /* (vocab_size,) the output */
    float* key_cache;   /* (n_layers, seq_len, kv_dim) */
    float* value_cache; /* (n_layers, seq_len, kv_dim) */
} RunState;

typedef struct {
    Layout layout; /* layout.config: the header, with a positive vocab_size */
    Weights weights;
    Matrix* layer_matrices; /* 7 * n_layers, what the Weights' per-layer pointers index */
    RunState state;
    size_t size;        /* bytes of the caller's checkpoint, which the weights point into */
    const float* rope;  /* (rope_positions, head_size / 2, 2) RoPE's cos and sin, or NULL */
    int rope_positions; /* positions the table covers; later ones are computed */
} Engine;

static void free_state(RunState* s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->hb); free(s->hb2); free(s->xq.q);
    free(s->xq.s); free(s->xq.prepared); free(s->q); free(s->att); free(s->logits);
    free(s->key_cache); free(s->value_cache);
    memset(s, 0, sizeof(*s));
}

/*
 * a * b into *out, in size_t: the width the engine really has (32 bits in WebAssembly, where a
 * product of exactly 2^32 would wrap to 0 and calloc(0) would succeed). Returns 0 on overflow.
 */
static int mul_size(size_t a, size_t b, size_t* out) {
    if (b != 0 && a > SIZE_MAX / b) return 0;
    *out = a * b;
    return 1;
}

/* Element counts of the run state's two buffers that grow with seq_len; 0 when one overflows. */
static int state_sizes(const Config* c, size_t* cache, size_t* att) {
    size_t kv_dim = (size_t)c->dim / c->n_heads * c->n_kv_heads; /* <= dim: cannot overflow */
    size_t layer;
    return mul_size((size_t)c->seq_len, kv_dim, &layer) && mul_size(layer, c->n_layers, cache) &&
           mul_size(*cache, sizeof(float), &layer) && /* the cache in bytes fits too */
           mul_size((size_t)c->n_heads, (size_t)c->seq_len, att) &&
           mul_size(*att, sizeof(float), &layer);
}

static int alloc_state(RunState* s, const Layout* l) {
    const Config* c = &l->config;
    /* The KV cache in MB, for the message: computed in double, which cannot overflow. */
    double cache_mb = 2.0 * c->n_layers * c->seq_len * ((double)c->dim / c->n_heads) *
                      c->n_kv_heads * sizeof(float) / 1e6;
    size_t cache, att;
    memset(s, 0, sizeof(*s));
    if (!state_sizes(c, &cache, &att)) {
        return fail(L2C_ERR_NOMEM, "out of memory: the KV cache alone needs %.1f MB", cache_mb);
    }
    size_t widest = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
    s->x = calloc(c->dim, sizeof(float));
    s->xb = calloc(c->dim, sizeof(float));
    s->xb2 = calloc(c->dim, sizeof(float));
    s->hb = calloc(c->hidden_dim, sizeof(float));
    s->hb2 = calloc(c->hidden_dim, sizeof(float));
    int int8 = l->format == FORMAT_INT8;
    s->xq.q = int8 ? calloc(widest, sizeof(int8_t)) : NULL;
    s->xq.s = int8 ? calloc(widest / l->group_size, sizeof(float)) : NULL;
    s->xq.prepared = int8 ? calloc(widest / 16 + 1, Q8_PREPARED_BYTES) : NULL;
    s->q = calloc(c->dim, sizeof(float));
    s->att = calloc(att, sizeof(float));
    s->logits = calloc(c->vocab_size, sizeof(float));
    s->key_cache = calloc(cache, sizeof(float));
    s->value_cache = calloc(cache, sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 ||
        (int8 && (!s->xq.q || !s->xq.s || !s->xq.prepared)) || !s->q || !s->att || !s->logits ||
        !s->key_cache || !s->value_cache) {
        free_state(s);
        return fail(L2C_ERR_NOMEM, "out of memory: the KV cache alone needs %.1f MB", cache_mb);
    }
    return L2C_OK;
}

/* ---------------------------------------------------------------------------------------------
 * 4. Math kernels. Each sums in the same order as run.c, so fp32 results are bit-identical to
 *    it; the int8 kernels (q8.h) follow runq.c's order, so int8 results are bit-identical to runq.c.
 */

static void rmsnorm(float* o, const float* x, const float* weight, int size) {
    float ss = 0.0f;
    for (int j = 0; j < size; j++) ss += x[j] * x[j];
    ss /= size;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < size; j++) o[j] = weight[j] * (ss * x[j]);
}

static void softmax(float* x, int size) {
    float max_val = x[0];
    for (int i = 1; i < size; i++) if (x[i] > max_val) max_val = x[i];
    float sum = 0.0f;
    for (int i = 0; i < size; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (int i = 0; i < size; i++) x[i] /= sum;
}

/* Four floats in one SIMD register (GCC and Clang vector extensions: SSE natively, SIMD128 in
 * WebAssembly). */
typedef float v4f __attribute__((vector_size(16)));
typedef float v4f_unaligned __attribute__((vector_size(16), aligned(4)));

static inline v4f load4(const float* p) { return *(const v4f_unaligned*)p; }

/* run.c's plain loop: rows [begin, end) of a row-major W (d, n) @ x (n,) -> out, one at a time. */
static void matmul_rows_plain(float* out, const float* x, const float* w, int n, int begin,
                              int end) {
    for (int i = begin; i < end; i++) {
        float val = 0.0f;
        for (int j = 0; j < n; j++) val += w[(size_t)i * n + j] * x[j];
        out[i] = val;
    }
}

/* Rows of the fp32 kernel's interleaved blocks (below); threads split matmuls in whole blocks. */
#define BLOCK_ROWS 32

#ifdef L2C_SCALAR
/* The baseline build (-DL2C_SCALAR): the plain loop, weights as stored, attention's loops plain. */
#define L2C_SIMD 0
static void matmul_rows(float* out, const float* x, const float* w, int n, int begin, int end) {
    matmul_rows_plain(out, x, w, n, begin, end);
}
#else
/* The SIMD build: the kernels below, reading fp32 weights interleaved at load. */
#define L2C_SIMD 1
/*
 * The fp32 weight layout the kernel reads. At load, each block of BLOCK_ROWS consecutive rows of
 * every fp32 matrix is rewritten in place, column by column: block[BLOCK_ROWS * j + k] =
 * W[i + k][j]. Rows after the last whole block keep the row-major layout. The kernel then reads a
 * block front to back, as one stream: column j of its 32 rows is 8 SIMD vectors in a row.
 */
static void interleave_rows(float* w, int d, int n, float* tmp /* (BLOCK_ROWS * n,) */) {
    for (int i = 0; i + BLOCK_ROWS <= d; i += BLOCK_ROWS) {
        float* block = w + (size_t)i * n;
        memcpy(tmp, block, (size_t)BLOCK_ROWS * n * sizeof(float));
        for (int j = 0; j < n; j++)
            for (int k = 0; k < BLOCK_ROWS; k++)
                block[(size_t)BLOCK_ROWS * j + k] = tmp[(size_t)k * n + j];
    }
}

/* Element j of row i of an interleaved (d, n) matrix. */
static inline float interleaved_at(const float* w, int d, int n, int i, int j) {
    if (i >= d - d % BLOCK_ROWS) return w[(size_t)i * n + j];
    return w[(size_t)(i - i % BLOCK_ROWS) * n + (size_t)BLOCK_ROWS * j + i % BLOCK_ROWS];
}

/*
 * W (d, n) @ x (n,) -> out (d,), for rows [begin, end), begin a multiple of BLOCK_ROWS.
 *
 * Every row is still one sequential sum over j = 0..n-1 with separate multiplies and adds, exactly
 * as run.c computes it, so the results are bit-identical. The speed comes from running 32 rows at
 * once: four rows in the four lanes of a SIMD vector, and eight vectors, so eight independent
 * chains of adds. A block is read as one stream, which the hardware prefetcher follows. Measured on
 * a 32000 x 288 matrix (the classifier), AMD EPYC (Zen 5): four separate 4-row blocks (the
 * layout before this one) took 2.30 ms in WebAssembly (node) and 2.48 ms natively, eight of them
 * 1.54-1.78 ms; one 32-row block 1.06 ms in both (35 GB/s, near this machine's 40-50 GB/s for a
 * plain read). A stories15M-shaped model, one thread, greedy: the command line 225 -> 410 tok/s,
 * the page 193-217 -> 285-412 tok/s (the same machine, minutes apart).
 * GCC and Clang vector extensions: SSE natively, WebAssembly SIMD128 under emcc -msimd128.
 */
static void matmul_rows(float* out, const float* x, const float* w, int n, int begin, int end) {
    int whole = end - end % BLOCK_ROWS; /* rows [begin, whole) are in interleaved blocks */
    for (int i = begin; i < whole; i += BLOCK_ROWS) {
        const float* block = w + (size_t)i * n;
        v4f acc[8] = {{0.0f, 0.0f, 0.0f, 0.0f}};
        for (int j = 0; j < n; j++) {
            v4f xj = {x[j], x[j], x[j], x[j]};
            const float* column = block + (size_t)BLOCK_ROWS * j;
            for (int r = 0; r < 8; r++) acc[r] = acc[r] + load4(column + 4 * r) * xj;
        }
        for (int r = 0; r < 8; r++) memcpy(out + i + 4 * r, &acc[r], sizeof(v4f));
    }
    matmul_rows_plain(out, x, w, n, whole > begin ? whole : begin, end); /* rows after the blocks */
}
#endif

/*
 * int8 (Q8_0) kernels, as llama2.c's runq.c: the matmul input is quantized to int8 with one scale
 * per group, each group's dot product is exact in int32, and the groups' contributions are summed
 * in float. Integer sums do not depend on order, so the SIMD version is free to regroup them.
 */

static inline float load_scale(const float* s, size_t i) {
    float v;
    memcpy(&v, (const unsigned char*)s + i * sizeof(float), sizeof(v)); /* may be unaligned */
    return v;
}

/* x (n,) -> int8 values and one scale per group_size values, max |x| of a group mapping to 127. */
static void quantize(QuantizedVector* out, const float* x, int n, int group_size) {
    for (int g = 0; g < n / group_size; g++) {
        const float* xg = x + (size_t)g * group_size;
        float wmax = 0.0f;
        for (int i = 0; i < group_size; i++) {
            float v = fabsf(xg[i]);
            if (v > wmax) wmax = v;
        }
        float scale = wmax / 127.0f;
        out->s[g] = scale;
        for (int i = 0; i < group_size; i++) {
            /* NaN (a non-finite weight or an overflowed activation) quantizes to 0, as x86's
             * conversion gives in practice: casting it to int8 would be undefined. */
            float r = scale > 0.0f ? roundf(xg[i] / scale) : 0.0f;
            out->q[(size_t)g * group_size + i] = r >= -128.0f && r <= 127.0f ? (int8_t)r : 0;
        }
    }
}

/* The int8 matmul itself (runq.c's arithmetic, SIMD integer dot products) is wasm/q8.h. */

/*
 * In the browser a second build of the same kernel may take over: wasm/relaxed.c, built by clang
 * with relaxed SIMD (which this Emscripten cannot emit), as a module of its own that shares this
 * module's memory. The page hands its bytes to l2c_use_relaxed_kernel when the browser validates
 * them; every thread then instantiates it on first use (wasm/relaxed_glue.js).
 */
#ifdef __EMSCRIPTEN__
extern void l2c_relaxed_rows(const unsigned char* module, int module_size, float* out,
                             const int8_t* xq, const unsigned char* prepared, const float* xs,
                             const int8_t* wq, const float* ws, int n, int gs, int begin, int end);
static const unsigned char* g_relaxed_module; /* the module's bytes, or NULL: q8.h's kernel */
static int g_relaxed_size;
#endif

/* W (d, n) int8 @ x (n,) quantized -> out (d,), rows [begin, end), with the kernel in use. */
static void matmul_rows_q8(float* out, const QuantizedVector* x, const Matrix* w, int n,
                           int group_size, int begin, int end) {
#ifdef __EMSCRIPTEN__
    if (g_relaxed_module) {
        l2c_relaxed_rows(g_relaxed_module, g_relaxed_size, out, x->q, x->prepared, x->s, w->q,
                         w->s, n, group_size, begin, end);
        return;
    }
#endif
    q8_matmul_rows(out, x->q, x->prepared, x->s, w->q, w->s, n, group_size, begin, end);
}

/* x->prepared from x->q (n values), in the layout of the kernel in use, when it reads it. */
static void prepare_q8_input(QuantizedVector* x, int n, int group_size) {
    if (!q8_wide(group_size)) return;
#ifdef __EMSCRIPTEN__
    if (g_relaxed_module) {
        q8_prepare_relaxed(x->prepared, x->q, n);
        return;
    }
#endif
    q8_prepare_input(x->prepared, x->q, n);
}

/* ---------------------------------------------------------------------------------------------
 * 5. Threads: a small pool that shares each matmul's rows (and attention's heads) between threads.
 *
 * A job is a list of chunks (blocks of rows, or heads) that every thread takes from a shared counter
 * until none are left, so a thread the system delays (in a browser, the page's own threads share
 * the cores) holds the others up by one chunk at most. Each chunk is whole rows, so results stay
 * bit-identical whatever the thread count. Workers poll briefly for the next job (a token runs
 * dozens of jobs back to back), then sleep on a condition variable, so nothing burns the CPU between
 * tokens. Builds without pthreads (the single-thread WebAssembly build) run each job in the caller.
 */

#if defined(__EMSCRIPTEN__) && !defined(__EMSCRIPTEN_PTHREADS__)
#define L2C_NO_THREADS 1
#endif

#define MAX_THREADS 16

typedef void (*JobFn)(void* job);

#ifdef L2C_NO_THREADS

static int g_threads = 1;
static void run_job(JobFn fn, void* job) { fn(job); }
static int set_pool_threads(int n) { (void)n; return 1; }
static int hardware_threads(void) { return 1; }

#else

#include <pthread.h>
#include <unistd.h>
#ifdef __EMSCRIPTEN__
#include <emscripten/threading.h>
#endif

#include <time.h>

/*
 * How long a thread polls before it sleeps. Jobs follow each other within microseconds during a
 * token, so a short poll catches the next one; between tokens (the sampler runs) threads sleep and
 * burn nothing. Polling longer does not pay: when the threads share the cores with other work (a
 * browser's own threads), a thread polling for a job's last chunk keeps the thread computing it
 * off the CPU (measured in Chromium on 2 cores: 10 us polls ran 2 threads twice as fast as 200 us).
 */
#define SPIN_MICROSECONDS 10.0

static double now_microseconds(void) {
#ifdef __EMSCRIPTEN__
    return emscripten_get_now() * 1000.0;
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
#endif
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Polls while (*value == target) == while_equal, or until the spin time is up. Returns the last
 * value read. */
static int spin(atomic_int* value, int target, int while_equal) {
    int v = atomic_load(value);
    double deadline = 0.0;
    for (int i = 1; (v == target) == while_equal; i++) {
        cpu_relax();
        v = atomic_load(value);
        if (i % 64 == 0) { /* read the clock now and then: it is a call into JavaScript in wasm */
            double t = now_microseconds();
            if (deadline == 0.0) deadline = t + SPIN_MICROSECONDS;
            else if (t > deadline) break;
        }
    }
    return v;
}

typedef struct {
    pthread_t threads[MAX_THREADS];
    int n_workers; /* threads besides the caller */
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* a new job (or stop) */
    pthread_cond_t idle; /* the last worker finished the job */
    atomic_int generation; /* bumped once per job */
    atomic_int pending;    /* workers still on the current job */
    atomic_int stop;
    JobFn fn;
    void* job;
} Pool;

static Pool g_pool = {.mutex = PTHREAD_MUTEX_INITIALIZER,
                      .wake = PTHREAD_COND_INITIALIZER,
                      .idle = PTHREAD_COND_INITIALIZER};
static int g_threads = 1; /* threads per job, the caller included */

typedef struct { int generation; } WorkerArg; /* the last job before the worker started */
static WorkerArg g_worker_args[MAX_THREADS];

static void* worker_main(void* arg) {
    int seen = ((WorkerArg*)arg)->generation; /* not a fresh read: a job may already be posted */
    for (;;) {
        int gen = spin(&g_pool.generation, seen, 1); /* while no new job */
        if (gen == seen) {
            pthread_mutex_lock(&g_pool.mutex);
            while ((gen = atomic_load(&g_pool.generation)) == seen && !atomic_load(&g_pool.stop)) {
                pthread_cond_wait(&g_pool.wake, &g_pool.mutex);
            }
            pthread_mutex_unlock(&g_pool.mutex);
        }
        if (atomic_load(&g_pool.stop)) return NULL;
        seen = gen;
        g_pool.fn(g_pool.job);
        if (atomic_fetch_sub(&g_pool.pending, 1) == 1) {
            pthread_mutex_lock(&g_pool.mutex);
            pthread_cond_signal(&g_pool.idle);
            pthread_mutex_unlock(&g_pool.mutex);
        }
    }
}

/* Runs fn(job) on every thread and returns when all are done. */
static void run_job(JobFn fn, void* job) {
    if (g_threads == 1) {
        fn(job);
        return;
    }
    g_pool.fn = fn;
    g_pool.job = job;
    atomic_store(&g_pool.pending, g_threads - 1);
    pthread_mutex_lock(&g_pool.mutex);
    atomic_fetch_add(&g_pool.generation, 1);
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.mutex);
    fn(job);
    spin(&g_pool.pending, 0, 0); /* while workers are still on the job */
    if (atomic_load(&g_pool.pending) > 0) {
        pthread_mutex_lock(&g_pool.mutex);
        while (atomic_load(&g_pool.pending) > 0) pthread_cond_wait(&g_pool.idle, &g_pool.mutex);
        pthread_mutex_unlock(&g_pool.mutex);
    }
}

static void stop_pool(void) {
    if (g_pool.n_workers == 0) return;
    pthread_mutex_lock(&g_pool.mutex);
    atomic_store(&g_pool.stop, 1);
    pthread_cond_broadcast(&g_pool.wake);
    pthread_mutex_unlock(&g_pool.mutex);
    for (int i = 0; i < g_pool.n_workers; i++) pthread_join(g_pool.threads[i], NULL);
    g_pool.n_workers = 0;
    atomic_store(&g_pool.stop, 0);
    g_threads = 1;
}

/* Resizes the pool to n threads in all (the caller included). Returns the count it got. */
static int set_pool_threads(int n) {
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    if (n == g_threads) return n;
    stop_pool();
    for (int i = 0; i < n - 1; i++) {
        g_worker_args[i].generation = atomic_load(&g_pool.generation);
        if (pthread_create(&g_pool.threads[i], NULL, worker_main, &g_worker_args[i]) != 0) break;
        g_pool.n_workers = i + 1;
    }
    g_threads = g_pool.n_workers + 1;
    return g_threads;
}

static int hardware_threads(void) {
#ifdef __EMSCRIPTEN__
    int n = emscripten_num_logical_cores();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n < 1 ? 1 : (int)(n > MAX_THREADS ? MAX_THREADS : n);
}

#endif /* L2C_NO_THREADS */

/* A job's chunks, numbered 0..count-1, taken one at a time by whichever thread is free. */
typedef struct {
    atomic_int next;
    int count;
} WorkList;

/* The next chunk for this thread, or -1 when all are taken. */
static inline int take_chunk(WorkList* work) {
    int chunk = atomic_fetch_add_explicit(&work->next, 1, memory_order_relaxed);
    return chunk < work->count ? chunk : -1;
}

#define CHUNKS_PER_THREAD 8 /* enough to even out a delayed thread, few enough to cost nothing */

/* Rows per chunk of a matmul with d rows: the whole matrix on one thread; otherwise about
 * CHUNKS_PER_THREAD chunks per thread, in whole blocks of BLOCK_ROWS rows. */
static int chunk_rows(int d) {
    if (g_threads == 1) return d;
    int rows = (d + CHUNKS_PER_THREAD * g_threads - 1) / (CHUNKS_PER_THREAD * g_threads);
    return (rows + BLOCK_ROWS - 1) / BLOCK_ROWS * BLOCK_ROWS;
}

/* Up to three matmuls with the same input, run as one job: W_i (d_i, n) @ x (n,) -> out_i. */
typedef struct {
    int count;
    const float* x;           /* fp32 input */
    const QuantizedVector* xq; /* the same input quantized, for int8 matrices */
    int n;
    int group_size;
    struct {
        float* out;
        const Matrix* w;
        int d;
        int chunk_rows; /* rows per chunk, a multiple of BLOCK_ROWS */
        int chunks;
    } m[3];
    WorkList work; /* the chunks of m[0], then those of m[1], then m[2] */
} MatmulJob;

static void matmul_job(void* arg) {
    MatmulJob* job = arg;
    for (int chunk; (chunk = take_chunk(&job->work)) >= 0;) {
        int i = 0;
        while (chunk >= job->m[i].chunks) chunk -= job->m[i++].chunks;
        int begin = chunk * job->m[i].chunk_rows;
        int end = begin + job->m[i].chunk_rows < job->m[i].d ? begin + job->m[i].chunk_rows
                                                               : job->m[i].d;
        if (job->m[i].w->f) {
            matmul_rows(job->m[i].out, job->x, job->m[i].w->f, job->n, begin, end);
        } else {
            matmul_rows_q8(job->m[i].out, job->xq, job->m[i].w, job->n, job->group_size, begin,
                           end);
        }
    }
}

/* Runs the job's matmuls over all threads, quantizing the input first for an int8 model. */
static void run_matmuls(Engine* e, MatmulJob* job) {
    if (e->layout.format == FORMAT_INT8) {
        quantize(&e->state.xq, job->x, job->n, e->layout.group_size);
        prepare_q8_input(&e->state.xq, job->n, e->layout.group_size);
        job->xq = &e->state.xq;
        job->group_size = e->layout.group_size;
    }
    int total = 0;
    for (int i = 0; i < job->count; i++) {
        int d = job->m[i].d;
        job->m[i].chunk_rows = chunk_rows(d);
        job->m[i].chunks = (d + job->m[i].chunk_rows - 1) / job->m[i].chunk_rows;
        total += job->m[i].chunks;
    }
    atomic_init(&job->work.next, 0);
    job->work.count = total;
    run_job(matmul_job, job);
}

static void matmul(Engine* e, float* out, const float* x, const Matrix* w, int n, int d) {
    MatmulJob job = {.count = 1, .x = x, .n = n, .m = {{out, w, d}}};
    run_matmuls(e, &job);
}

/* ---------------------------------------------------------------------------------------------
 * 6. The forward pass: one token at one position -> logits over the vocabulary.
 */

typedef struct {
    Engine* e;
    int layer;
    int pos;
    WorkList heads; /* one chunk per query head */
} AttentionJob;

/*
 * att[tt] = (q . key_tt) / sqrt(head_size) for tt in [0, n), each dot product summed in order as
 * run.c does. Four keys at once run in the four lanes of a vector: a 4x4 block (4 keys x 4
 * elements) is transposed in registers and added element after element.
 */
static void attention_scores(float* att, const float* q, const float* keys, int kv_dim,
                             int head_size, int n) {
    float scale = sqrtf(head_size);
    int tt = 0;
    if (L2C_SIMD && head_size % 4 == 0) {
        for (; tt + 4 <= n; tt += 4) {
            const float* k0 = keys + (size_t)tt * kv_dim;
            const float* k1 = k0 + kv_dim;
            const float* k2 = k1 + kv_dim;
            const float* k3 = k2 + kv_dim;
            v4f acc = {0.0f, 0.0f, 0.0f, 0.0f}; /* lane r: the score of key tt + r */
            for (int i = 0; i < head_size; i += 4) {
                v4f a = load4(k0 + i), b = load4(k1 + i), c = load4(k2 + i), d = load4(k3 + i);
                v4f ab_lo = __builtin_shufflevector(a, b, 0, 4, 1, 5); /* a0 b0 a1 b1 */
                v4f ab_hi = __builtin_shufflevector(a, b, 2, 6, 3, 7); /* a2 b2 a3 b3 */
                v4f cd_lo = __builtin_shufflevector(c, d, 0, 4, 1, 5);
                v4f cd_hi = __builtin_shufflevector(c, d, 2, 6, 3, 7);
                acc = acc + __builtin_shufflevector(ab_lo, cd_lo, 0, 1, 4, 5) *
                                (v4f){q[i], q[i], q[i], q[i]}; /* element i of the 4 keys */
                acc = acc + __builtin_shufflevector(ab_lo, cd_lo, 2, 3, 6, 7) *
                                (v4f){q[i + 1], q[i + 1], q[i + 1], q[i + 1]};
                acc = acc + __builtin_shufflevector(ab_hi, cd_hi, 0, 1, 4, 5) *
                                (v4f){q[i + 2], q[i + 2], q[i + 2], q[i + 2]};
                acc = acc + __builtin_shufflevector(ab_hi, cd_hi, 2, 3, 6, 7) *
                                (v4f){q[i + 3], q[i + 3], q[i + 3], q[i + 3]};
            }
            acc = acc / (v4f){scale, scale, scale, scale};
            memcpy(att + tt, &acc, sizeof(acc));
        }
    }
    for (; tt < n; tt++) { /* the keys left over */
        const float* k = keys + (size_t)tt * kv_dim;
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) score += q[i] * k[i];
        att[tt] = score / scale;
    }
}

/* Multi-head attention of the current position over positions 0..pos, heads shared by threads. */
static void attention_job(void* arg) {
    AttentionJob* job = arg;
    const Config* p = &job->e->layout.config;
    RunState* s = &job->e->state;
    int pos = job->pos;
    int head_size = p->dim / p->n_heads;
    int kv_dim = p->dim * p->n_kv_heads / p->n_heads;
    int kv_mul = p->n_heads / p->n_kv_heads; /* query heads per key/value head */
    size_t loff = (size_t)job->layer * p->seq_len * kv_dim;
    for (int h; (h = take_chunk(&job->heads)) >= 0;) {
        const float* q = s->q + h * head_size;
        float* att = s->att + (size_t)h * p->seq_len;
        size_t kv_off = (size_t)(h / kv_mul) * head_size;
        const float* keys = s->key_cache + loff + kv_off; /* key tt at keys + tt * kv_dim */
        attention_scores(att, q, keys, kv_dim, head_size, pos + 1);
        softmax(att, pos + 1);
        float* xb = s->xb + h * head_size;
        memset(xb, 0, head_size * sizeof(float));
        int i4 = L2C_SIMD ? head_size & ~3 : 0;
        for (int tt = 0; tt <= pos; tt++) {
            const float* v = s->value_cache + loff + (size_t)tt * kv_dim + kv_off;
            float a = att[tt];
            v4f av = {a, a, a, a};
            for (int i = 0; i < i4; i += 4) { /* lanes are separate sums: the order is run.c's */
                v4f sum = load4(xb + i) + av * load4(v + i);
                memcpy(xb + i, &sum, sizeof(sum));
            }
            for (int i = i4; i < head_size; i++) xb[i] += a * v[i];
        }
    }
}

/* Row `token` of the token embedding, as fp32 (int8 rows are dequantized on the fly). */
static void embed(Engine* e, float* x, int token) {
    const Matrix* m = &e->weights.token_embedding;
    int dim = e->layout.config.dim;
    size_t row = (size_t)token * dim;
    if (m->f) {
#if L2C_SIMD
        if (e->layout.shared) { /* the classifier's rows, interleaved for the matmul */
            for (int j = 0; j < dim; j++)
                x[j] = interleaved_at(m->f, e->layout.config.vocab_size, dim, token, j);
            return;
        }
#endif
        memcpy(x, m->f + row, dim * sizeof(float));
        return;
    }
    int group_size = e->layout.group_size;
    int interleaved = e->layout.shared && q8_wide(group_size); /* the classifier's rows */
    for (int i = 0; i < dim; i++) {
        int8_t q = interleaved ? q8_interleaved_at(m->q, e->layout.config.vocab_size, dim, token, i)
                               : m->q[row + i];
        x[i] = q * load_scale(m->s, (row + i) / group_size);
    }
}

/*
 * RoPE's rotation for element pair (head_dim, head_dim + 1) of a head at position pos, as run.c
 * computes it, with this C library's powf, cosf and sinf. glibc's cosf and sinf (run.c's, the
 * command line's) and musl's (Emscripten's) differ in the last bit for a few percent of angles, so
 * the page takes these values from a table the native engine wrote (l2c_rope_table,
 * l2c_use_rope_table) rather than from its own libm.
 */
static void rope_cos_sin(int pos, int head_dim, int head_size, float* fcr, float* fci) {
    float freq = 1.0f / powf(10000.0f, head_dim / (float)head_size);
    float val = pos * freq;
    *fcr = cosf(val);
    *fci = sinf(val);
}

static float* forward(Engine* e, int token, int pos) {
    const Config* p = &e->layout.config;
    const Weights* w = &e->weights;
    RunState* s = &e->state;
    float* x = s->x;
    int dim = p->dim;
    int kv_dim = p->dim * p->n_kv_heads / p->n_heads;
    int hidden_dim = p->hidden_dim;
    int head_size = dim / p->n_heads;

    embed(e, x, token);

    for (int l = 0; l < p->n_layers; l++) {
        size_t loff = (size_t)l * p->seq_len * kv_dim; /* this layer's slice of the KV cache */
        float* k = s->key_cache + loff + (size_t)pos * kv_dim;
        float* v = s->value_cache + loff + (size_t)pos * kv_dim;

        /* attention: q, k, v projections in one job, k and v written straight into the cache */
        rmsnorm(s->xb, x, w->rms_att + (size_t)l * dim, dim);
        MatmulJob qkv = {.count = 3, .x = s->xb, .n = dim, .m = {
            {s->q, &w->wq[l], dim}, {k, &w->wk[l], kv_dim}, {v, &w->wv[l], kv_dim}}};
        run_matmuls(e, &qkv);

        /* RoPE: rotate each (even, odd) pair of q and k by a position-dependent angle */
        const float* table = pos < e->rope_positions ? e->rope + (size_t)pos * head_size : NULL;
        for (int i = 0; i < dim; i += 2) {
            int head_dim = i % head_size;
            float fcr, fci;
            if (table) {
                fcr = table[head_dim];
                fci = table[head_dim + 1];
            } else {
                rope_cos_sin(pos, head_dim, head_size, &fcr, &fci);
            }
            int rotn = i < kv_dim ? 2 : 1; /* 2 = q and k, 1 = q only */
            for (int r = 0; r < rotn; r++) {
                float* vec = r == 0 ? s->q : k;
                float v0 = vec[i];
                float v1 = vec[i + 1];
                vec[i] = v0 * fcr - v1 * fci;
                vec[i + 1] = v0 * fci + v1 * fcr;
            }
        }

        AttentionJob attention = {.e = e, .layer = l, .pos = pos, .heads = {.count = p->n_heads}};
        run_job(attention_job, &attention);
        matmul(e, s->xb2, s->xb, &w->wo[l], dim, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];

        /* feed-forward: w2(silu(w1 x) * w3 x), w1 and w3 in one job */
        rmsnorm(s->xb, x, w->rms_ffn + (size_t)l * dim, dim);
        MatmulJob up = {.count = 2, .x = s->xb, .n = dim, .m = {
            {s->hb, &w->w1[l], hidden_dim}, {s->hb2, &w->w3[l], hidden_dim}}};
        run_matmuls(e, &up);
        for (int i = 0; i < hidden_dim; i++) {
            float val = s->hb[i];
            val *= (1.0f / (1.0f + expf(-val)));
            val *= s->hb2[i];
            s->hb[i] = val;
        }
        matmul(e, s->xb, s->hb, &w->w2[l], hidden_dim, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb[i];
    }

    rmsnorm(x, x, w->rms_final, dim);
    matmul(e, s->logits, x, &w->wcls, dim, p->vocab_size);
    return s->logits;
}

/* ---------------------------------------------------------------------------------------------
 * 7. The exported API, shared by the native (ctypes) and browser (WebAssembly) backends.
 */

/* The message of the most recent failure, or "" after a success. */
L2C_API const char* l2c_last_error(void) { return g_error; }
L2C_API int l2c_last_error_code(void) { return g_error_code; }

/* Reads and checks a checkpoint's layout, and that its size is the one the header implies. */
static int check_layout(const unsigned char* data, size_t size, Layout* l) {
    g_error[0] = '\0';
    g_error_code = L2C_OK;
    if (data == NULL && size > 0) return fail(L2C_ERR_ARGUMENT, "checkpoint pointer is NULL");
    int rc = read_layout(data, size, l);
    if (rc != L2C_OK) return rc;
    int64_t expected = checkpoint_bytes(l);
    if ((int64_t)size != expected) {
        return fail(L2C_ERR_SIZE,
                    "checkpoint size mismatch: the header implies %lld bytes, the file has %zu "
                    "(%s)",
                    (long long)expected, size,
                    (int64_t)size < expected ? "truncated" : "extra bytes after the weights");
    }
    return L2C_OK;
}

/*
 * Checks a checkpoint without loading it. Fills config7 (7 ints, the header with a positive
 * vocab_size) when the header could be read. Returns L2C_OK or an error code.
 */
L2C_API int l2c_check(const unsigned char* data, size_t size, int* config7) {
    Layout l;
    int rc = check_layout(data, size, &l);
    if (config7 && (rc == L2C_OK || rc == L2C_ERR_SIZE)) memcpy(config7, &l.config, sizeof(Config));
    return rc;
}

L2C_API void l2c_free(Engine* e);

/* Calls rewrite(matrix, d, n, tmp) for every weight matrix (d, n) the matmul reads: seven per
 * layer, then the classifier. tmp: scratch of `tmp_per_column` bytes per column of the widest. */
static int rewrite_matrices(Engine* e, void (*rewrite)(const Matrix*, int, int, void*),
                            size_t tmp_per_column) {
    const Config* c = &e->layout.config;
    int kv_dim = c->dim * c->n_kv_heads / c->n_heads;
    int widest = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
    void* tmp = malloc(tmp_per_column * widest);
    if (!tmp) return fail(L2C_ERR_NOMEM, "out of memory");
    const Weights* w = &e->weights;
    for (int l = 0; l < c->n_layers; l++) {
        struct { const Matrix* m; int d, n; } all[7] = {
            {&w->wq[l], c->dim, c->dim}, {&w->wk[l], kv_dim, c->dim}, {&w->wv[l], kv_dim, c->dim},
            {&w->wo[l], c->dim, c->dim}, {&w->w1[l], c->hidden_dim, c->dim},
            {&w->w2[l], c->dim, c->hidden_dim}, {&w->w3[l], c->hidden_dim, c->dim}};
        for (int i = 0; i < 7; i++) rewrite(all[i].m, all[i].d, all[i].n, tmp);
    }
    rewrite(&w->wcls, c->vocab_size, c->dim, tmp);
    free(tmp);
    return L2C_OK;
}

#if L2C_SIMD
static void interleave_fp32(const Matrix* m, int d, int n, void* tmp) {
    interleave_rows((float*)m->f, d, n, tmp);
}
#endif
static void interleave_int8(const Matrix* m, int d, int n, void* tmp) {
    q8_interleave((int8_t*)m->q, d, n, tmp);
}

/* Rewrites every matrix the matmul reads, in place, into the layout its kernel reads: fp32 in
 * blocks of BLOCK_ROWS rows (the SIMD build), int8 in q8.h's for groups the wide kernel takes. */
static int interleave_weights(Engine* e) {
#if L2C_SIMD
    if (e->layout.format == FORMAT_FP32) {
        return rewrite_matrices(e, interleave_fp32, BLOCK_ROWS * sizeof(float));
    }
#endif
    if (e->layout.format == FORMAT_INT8 && q8_wide(e->layout.group_size)) {
        return rewrite_matrices(e, interleave_int8, 4);
    }
    return L2C_OK;
}

/*
 * Loads a checkpoint from bytes the caller owns and keeps alive until l2c_free.
 * The engine takes the buffer over: it rearranges the weight matrices in place into the layout its
 * kernels read (section 4, q8.h), so the bytes are no longer a checkpoint file afterwards.
 * Returns an engine, or NULL with l2c_last_error() set (the buffer is then untouched).
 */
L2C_API Engine* l2c_load(unsigned char* data, size_t size) {
    Layout l;
    if (check_layout(data, size, &l) != L2C_OK) return NULL;
    if (((uintptr_t)data) % sizeof(float) != 0) {
        fail(L2C_ERR_ARGUMENT, "checkpoint buffer must be 4-byte aligned");
        return NULL;
    }
    Engine* e = calloc(1, sizeof(Engine));
    Matrix* matrices = calloc((size_t)7 * l.config.n_layers, sizeof(Matrix));
    if (!e || !matrices) {
        free(e);
        free(matrices);
        fail(L2C_ERR_NOMEM, "out of memory");
        return NULL;
    }
    e->layout = l;
    e->size = size;
    e->layer_matrices = matrices;
    map_weights(&e->weights, &l, data, matrices);
    if (alloc_state(&e->state, &l) != L2C_OK) {
        free(matrices);
        free(e);
        return NULL;
    }
    if (interleave_weights(e) != L2C_OK) {
        l2c_free(e);
        return NULL;
    }
    return e;
}

/* Copies the 7 config values (vocab_size positive) into out. Returns L2C_OK or an error code. */
L2C_API int l2c_config(const Engine* e, int* out7) {
    if (!e || !out7) return fail(L2C_ERR_ARGUMENT, "l2c_config: NULL argument");
    memcpy(out7, &e->layout.config, sizeof(Config));
    return L2C_OK;
}

L2C_API int l2c_shared_classifier(const Engine* e) { return e ? e->layout.shared : -1; }

/* 0 for the legacy fp32 format, 2 for int8 (llama2.c's export versions); -1 without an engine. */
L2C_API int l2c_format(const Engine* e) { return e ? e->layout.format : -1; }

/* Values per scale in an int8 model, 0 for fp32. */
L2C_API int l2c_group_size(const Engine* e) { return e ? e->layout.group_size : -1; }

/*
 * Runs one token at one position and returns the engine's (vocab_size,) logits buffer, valid until
 * the next call. Positions must be fed in order 0, 1, 2, ... for one sequence (the KV cache holds
 * positions below pos). Returns NULL with l2c_last_error() set on a bad argument.
 */
L2C_API float* l2c_forward(Engine* e, int token, int pos) {
    if (!e) {
        fail(L2C_ERR_ARGUMENT, "l2c_forward: engine is NULL");
        return NULL;
    }
    if (token < 0 || token >= e->layout.config.vocab_size) {
        fail(L2C_ERR_RANGE, "token %d out of range [0, %d)", token, e->layout.config.vocab_size);
        return NULL;
    }
    if (pos < 0 || pos >= e->layout.config.seq_len) {
        fail(L2C_ERR_RANGE, "position %d out of range [0, %d)", pos, e->layout.config.seq_len);
        return NULL;
    }
    return forward(e, token, pos);
}

/*
 * The threads that pay for this model on `cores` cores: one for a small model (a job must outweigh
 * the cost of waking threads), else one a core, at most MAX_THREADS.
 */
L2C_API int l2c_auto_threads(const Engine* e, int cores) {
    int64_t bytes = e ? (int64_t)e->size : 0;
    if (bytes < 8 * 1000 * 1000 || cores < 1) return 1;
    return cores < MAX_THREADS ? cores : MAX_THREADS;
}

/*
 * Sets the number of threads the engine computes with, the caller's included (one pool serves all
 * engines). n <= 0 picks l2c_auto_threads for this machine's cores. Returns the count in use.
 */
L2C_API int l2c_set_threads(const Engine* e, int n) {
    return set_pool_threads(n <= 0 ? l2c_auto_threads(e, hardware_threads()) : n);
}

L2C_API int l2c_threads(void) { return g_threads; }

/*
 * RoPE's cos and sin for every position below `positions` of a model with this head size, as this
 * C library computes them: out (positions, head_size / 2, 2) = cos, sin of each pair's angle. The
 * build runs it natively (glibc, as run.c) and ships the tables beside the WebAssembly engine.
 */
L2C_API int l2c_rope_table(float* out, int head_size, int positions) {
    if (!out || head_size <= 0 || head_size % 2 || positions <= 0 || positions > MAX_SEQ) {
        return fail(L2C_ERR_ARGUMENT, "l2c_rope_table: bad arguments");
    }
    for (int pos = 0; pos < positions; pos++) {
        for (int i = 0; i < head_size; i += 2) {
            float* pair = out + (size_t)pos * head_size + i;
            rope_cos_sin(pos, i, head_size, &pair[0], &pair[1]);
        }
    }
    return L2C_OK;
}

/*
 * Makes the engine read RoPE's cos and sin for positions below `positions` from `table`
 * (l2c_rope_table's layout for the model's head size, kept alive by the caller until l2c_free)
 * instead of computing them. NULL goes back to computing. Returns L2C_OK or L2C_ERR_ARGUMENT.
 */
L2C_API int l2c_use_rope_table(Engine* e, const float* table, int head_size, int positions) {
    if (!e) return fail(L2C_ERR_ARGUMENT, "l2c_use_rope_table: engine is NULL");
    if (table && (head_size != e->layout.config.dim / e->layout.config.n_heads || positions <= 0)) {
        return fail(L2C_ERR_ARGUMENT, "RoPE table for head size %d, the model's is %d", head_size,
                    e->layout.config.dim / e->layout.config.n_heads);
    }
    e->rope = table;
    e->rope_positions = table ? positions : 0;
    return L2C_OK;
}

/*
 * W (d, n) int8, row-major, @ xq (n,) int8 -> out (d,), with the int8 kernel in use (on a copy of W
 * in its layout): runq.c's matmul on quantized inputs, for tests that compare kernels (native,
 * SIMD128, relaxed) bit for bit.
 * Scales: ws (d * n / gs,), xs (n / gs,). Returns L2C_OK or L2C_ERR_ARGUMENT.
 */
L2C_API int l2c_q8_matmul(float* out, const int8_t* xq, const float* xs, const int8_t* wq,
                          const float* ws, int n, int d, int gs) {
    if (!out || !xq || !xs || !wq || !ws || n <= 0 || d <= 0 || gs <= 0 || n % gs) {
        return fail(L2C_ERR_ARGUMENT, "l2c_q8_matmul: bad arguments");
    }
    QuantizedVector x = {(int8_t*)xq, (float*)xs, calloc(n / 16 + 1, Q8_PREPARED_BYTES)};
    int8_t* layout = malloc((size_t)d * n); /* W in the kernel's layout: a copy, then rewritten */
    int8_t* tmp = malloc((size_t)4 * n);
    if (!x.prepared || !layout || !tmp) {
        free(x.prepared), free(layout), free(tmp);
        return fail(L2C_ERR_NOMEM, "l2c_q8_matmul: out of memory");
    }
    memcpy(layout, wq, (size_t)d * n);
    if (q8_wide(gs)) q8_interleave(layout, d, n, tmp);
    prepare_q8_input(&x, n, gs);
    Matrix w = {NULL, layout, ws};
    matmul_rows_q8(out, &x, &w, n, gs, 0, d);
    free(x.prepared), free(layout), free(tmp);
    return L2C_OK;
}

/* The name of the int8 kernel in use: "relaxed SIMD", or q8.h's build for this target. */
L2C_API const char* l2c_int8_kernel(void) {
#ifdef __EMSCRIPTEN__
    if (g_relaxed_module) return "relaxed SIMD";
#endif
    return Q8_KERNEL_NAME;
}

#ifdef __EMSCRIPTEN__
/*
 * Switches the int8 matmul to the relaxed-SIMD kernel module whose `size` bytes are at `module`
 * (kept alive by the caller), after checking it against the built-in kernel bit for bit on every
 * path of q8.h (groups of 16 and more, groups of 4, a plain group size; rows in blocks of four and
 * left over) with random values and the extremes (all -128 / -127 / 127 weights, all -127 / 127
 * inputs). NULL switches back. Returns 1 when the relaxed kernel is in use, 0 when not.
 */
L2C_API int l2c_use_relaxed_kernel(const unsigned char* module, int size) {
    g_relaxed_module = NULL;
    if (!module || size <= 0) return 0;
    enum { N = 96, D = 7 };
    int8_t xq[N], wq[D * N];
    unsigned char prepared[N / 16 * Q8_PREPARED_BYTES], relaxed[N / 16 * Q8_PREPARED_BYTES];
    float xs[N], ws[D * N], want[D], got[D];
    uint32_t seed = 2463534242u;
    for (int pattern = 0; pattern < 4; pattern++) {
        for (int i = 0; i < D * N; i++) {
            seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5; /* xorshift32 */
            int8_t extreme[4] = {0, -128, -127, 127};
            wq[i] = pattern ? extreme[pattern] : (int8_t)(seed >> 24);
            ws[i] = (float)(seed & 0xffff) / 65536.0f + 0.01f;
            if (i < N) {
                xq[i] = pattern ? (pattern == 2 ? -127 : 127) : (int8_t)(seed % 255 - 127);
                xs[i] = (float)(seed >> 16) / 65536.0f + 0.01f;
            }
        }
        q8_prepare_input(prepared, xq, N); /* each kernel's own layout */
        q8_prepare_relaxed(relaxed, xq, N);
        int group_sizes[3] = {32, 4, 6};
        for (int k = 0; k < 3; k++) {
            q8_matmul_rows(want, xq, prepared, xs, wq, ws, N, group_sizes[k], 0, D);
            l2c_relaxed_rows(module, size, got, xq, relaxed, xs, wq, ws, N, group_sizes[k], 0, D);
            if (memcmp(want, got, sizeof(want)) != 0) return 0;
        }
    }
    g_relaxed_module = module;
    g_relaxed_size = size;
    return 1;
}
#endif

/*
 * out[i] = expf(x[i]): this C library's expf, which run.c's sampler softmax uses. The Python
 * sampler calls it so its probabilities match run.c's to the bit (glibc's expf, and musl's in
 * WebAssembly, are not correctly rounded, so no other exp would do).
 */
L2C_API void l2c_expf(const float* x, float* out, int n) {
    for (int i = 0; i < n; i++) out[i] = expf(x[i]);
}

/*
 * The largest of x[0..n) (n >= 1) and the first index that holds it, four lanes at a time (the
 * sampler's scans: one chain of n dependent steps took 18 us for 32000 values in WebAssembly), or
 * -1 if a value is NaN. *infinite: whether one is inf or NaN (the largest is then not to be used).
 */
typedef int32_t v4i __attribute__((vector_size(16)));
static int first_max(const float* x, int n, float* largest, int* infinite) {
    const v4i exponent = {0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000}, four = {4, 4, 4, 4};
    v4f most = {x[0], x[0], x[0], x[0]};
    v4i at = {0, 0, 0, 0}, index = {0, 1, 2, 3}; /* lane k: where its largest first is */
    v4i not_a_number = {0, 0, 0, 0}, not_finite = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4, index += four) {
        v4f v = load4(x + i);
        not_a_number |= v != v;
        not_finite |= ((v4i)v & exponent) == exponent;
        v4i greater = v > most;
        most = (v4f)(((v4i)v & greater) | ((v4i)most & ~greater));
        at = (index & greater) | (at & ~greater);
    }
    float top = most[0];
    int first = at[0], bad_nan = not_a_number[0], bad = not_finite[0];
    for (int k = 1; k < 4; k++) {
        if (most[k] > top || (most[k] == top && at[k] < first)) top = most[k], first = at[k];
        bad_nan |= not_a_number[k];
        bad |= not_finite[k];
    }
    for (; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        bad_nan |= x[i] != x[i];
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
        if (x[i] > top) top = x[i], first = i;
    }
    *largest = top;
    *infinite = bad != 0;
    return bad_nan ? -1 : first;
}

/*
 * The sampler's vector work: run.c's top-p list, computed in one call.
 *
 * llama2c.sampler is the one definition of sampling; its numpy `nucleus` gives the same ids and
 * sums as this, bit for bit (tests/test_sampler.py), and the sampler calls this (and l2c_choose)
 * where an engine is at hand. In the page, numpy took 0.45 ms per sample of peaked
 * stories15M-shaped logits, in about 30 calls through Pyodide (19% of each token); this takes
 * 0.09-0.14 ms there, and the whole sample 0.16-0.26 ms.
 *
 * run.c: probs = softmax(logits / temperature) in float32, summed in index order; the candidates
 * are the tokens with probs >= (1 - topp) / (n - 1), sorted by probability, descending (ties in
 * index order); the list is read down until its running float32 sum exceeds topp.
 *
 * Writes that list, up to and including the token where the sum first exceeds topp (or to its
 * end), to ids[] and its running sums to cdf[], and returns its length. With no candidate at all,
 * the list is the most probable token (as llama2c.sampler decides). Returns 0 when a logit is not
 * finite after scaling: numpy decides then. `negligible` and `tiny` are llama2c.sampler's
 * NEGLIGIBLE and TINY. ids and cdf hold n values; work holds l2c_nucleus_work_size(n) bytes.
 */
static void sort_pairs(uint32_t* key, int32_t* id, uint32_t* tkey, int32_t* tid, int n);

L2C_API size_t l2c_nucleus_work_size(int n) { return n > 0 ? (size_t)n * 28 : 0; }

L2C_API int l2c_nucleus(const float* logits, int n, float temperature, float topp,
                        float negligible, float tiny, int32_t* ids, float* cdf, void* work) {
    if (!logits || !ids || !cdf || !work || n < 2 || !(temperature > 0.0f) || !(topp > 0.0f) ||
        !(topp < 1.0f)) {
        return -fail(L2C_ERR_ARGUMENT, "l2c_nucleus: bad arguments");
    }
    float* scaled = work;                 /* (n,) logits / temperature, unless it is 1 */
    uint32_t* key = (uint32_t*)scaled + n; /* (n,) candidates' probability bits, inverted */
    int32_t* cand = (int32_t*)key + n;    /* (n,) candidates' token ids */
    uint32_t* tkey = (uint32_t*)cand + n; /* (n,) the head being sorted */
    int32_t* tid = (int32_t*)tkey + n;    /* (n,) */
    uint32_t* skey = (uint32_t*)tid + n;  /* (n,) the sort's scratch */
    int32_t* sid = (int32_t*)skey + n;    /* (n,) */

    /* the scaled logits (x / 1 is x: no pass), their largest, and where it first is */
    const float* x = logits;
    if (temperature != 1.0f) {
        for (int i = 0; i < n; i++) scaled[i] = logits[i] / temperature;
        x = scaled;
    }
    float top;
    int infinite;
    int first_top = first_max(x, n, &top, &infinite);
    if (infinite) return 0;

    /* The tokens whose exp can change the float32 sum, in index order (ids[]), by the rule of
     * llama2c.sampler.softmax_terms: a term `negligible` below the largest before it leaves the
     * running sum as it is, unless that one is `tiny`. Up to the first largest logit the test is
     * on the running maximum; after it, the running maximum is the largest. The compaction has
     * no branches: a test that goes either way costs a mispredicted branch, more than an expf. */
    float floor_top = top + tiny, prefix = x[0];
    int kept = 0;
    ids[kept++] = 0;
    int i = 1;
    for (; i <= first_top; i++) {
        ids[kept] = i;
        kept += prefix < floor_top || x[i] >= prefix + negligible;
        prefix = x[i] > prefix ? x[i] : prefix;
    }
    float above = top + negligible;
    for (; i < n; i++) {
        ids[kept] = i;
        kept += x[i] >= above;
    }

    /* their exps, summed in index order as run.c's softmax */
    float sum = 0.0f;
    for (int k = 0; k < kept; k++) {
        cdf[k] = expf(x[ids[k]] - top);
        sum += cdf[k];
    }

    /* The candidates (probability >= cutoff), in index order, and the mass of each 12-bit bucket
     * of their probabilities. A token whose exp is below `least` cannot be one: its probability,
     * rounded, is below (1 - 1e-6) * cutoff. Peaked logits: ~1,000 of the exps pass. */
    float cutoff = (1.0f - topp) / (float)(n - 1);
    double least = (double)cutoff * sum * (1.0 - 1e-6), mass[1024] = {0}; /* p <= 1: bits >> 20 */
    int m = 0;
    for (int k = 0; k < kept; k++) {
        if (cdf[k] < least) continue;
        float p = cdf[k] / sum;
        if (p < cutoff) continue;
        uint32_t bits;
        memcpy(&bits, &p, 4);
        mass[bits >> 20] += p;
        key[m] = ~bits; /* ascending keys: descending probabilities */
        cand[m++] = ids[k];
    }
    if (m == 0) { /* run.c would read before its list; llama2c.sampler takes the most probable */
        int best = 0;
        for (int k = 1; k < kept; k++) best = cdf[k] / sum > cdf[best] / sum ? k : best;
        ids[0] = ids[best];
        cdf[0] = cdf[best] / sum;
        return 1;
    }

    /* Sort only a head: the candidates in the buckets that hold more than topp (in float64).
     * Their float32 sum almost always exceeds topp too; where rounding leaves it short, sort all. */
    uint32_t head_bits = 0;
    double heavier = 0.0;
    for (int b = 1023; b >= 0; b--) {
        heavier += mass[b];
        if (heavier > (double)topp) {
            head_bits = (uint32_t)b << 20;
            break;
        }
    }
    for (;;) {
        int h = 0;
        for (int k = 0; k < m; k++) {
            if (~key[k] >= head_bits) {
                tkey[h] = key[k];
                tid[h++] = cand[k];
            }
        }
        sort_pairs(tkey, tid, skey, sid, h);
        float cumulative = 0.0f;
        for (int k = 0; k < h; k++) {
            uint32_t bits = ~tkey[k];
            float p;
            memcpy(&p, &bits, 4);
            cumulative += p;
            ids[k] = tid[k];
            cdf[k] = cumulative;
            if (cumulative > topp) return k + 1;
        }
        if (head_bits == 0 || h == m) return h;
        head_bits = 0;
    }
}

/* The sampler's greedy choice (llama2c.sampler.sample_argmax): the first index of the largest of
 * n values, or -1 if one is NaN (numpy decides then). */
L2C_API int l2c_argmax(const float* x, int n) {
    if (!x || n < 1) return -fail(L2C_ERR_ARGUMENT, "l2c_argmax: bad arguments");
    float top;
    int infinite; /* inf has a first index; only NaN has none */
    return first_max(x, n, &top, &infinite);
}

/* run.c's draw from that list (llama2c.sampler.choose): the first token whose running sum exceeds
 * coin times the list's sum, or the last if rounding leaves none. count >= 1. */
L2C_API int l2c_choose(const int32_t* ids, const float* cdf, int count, float coin) {
    if (!ids || !cdf || count < 1) return -fail(L2C_ERR_ARGUMENT, "l2c_choose: bad arguments");
    float r = coin * cdf[count - 1];
    for (int k = 0; k < count; k++)
        if (r < cdf[k]) return ids[k];
    return ids[count - 1];
}

/* Sorts n (key, id) pairs by key, ascending, equal keys in their order: an LSD radix sort on
 * three 11-bit digits (insertion sort for a few). tkey and tid are scratch for n pairs. */
static void sort_pairs(uint32_t* key, int32_t* id, uint32_t* tkey, int32_t* tid, int n) {
    if (n <= 32) {
        for (int i = 1; i < n; i++) {
            uint32_t k = key[i];
            int32_t v = id[i];
            int j = i - 1;
            for (; j >= 0 && key[j] > k; j--) {
                key[j + 1] = key[j];
                id[j + 1] = id[j];
            }
            key[j + 1] = k;
            id[j + 1] = v;
        }
        return;
    }
    uint32_t *from_key = key, *to_key = tkey;
    int32_t *from_id = id, *to_id = tid;
    for (int shift = 0; shift < 32; shift += 11) {
        int start[2048] = {0};
        for (int i = 0; i < n; i++) start[(from_key[i] >> shift) & 2047]++;
        for (int d = 0, total = 0; d < 2048; d++) {
            int count = start[d];
            start[d] = total;
            total += count;
        }
        for (int i = 0; i < n; i++) {
            int at = start[(from_key[i] >> shift) & 2047]++;
            to_key[at] = from_key[i];
            to_id[at] = from_id[i];
        }
        uint32_t* k = from_key; from_key = to_key; to_key = k;
        int32_t* v = from_id; from_id = to_id; to_id = v;
    }
    memcpy(key, from_key, (size_t)n * sizeof *key); /* three passes: the pairs are in tkey/tid */
    memcpy(id, from_id, (size_t)n * sizeof *id);
}

/* Frees the engine and its run state. The checkpoint bytes stay the caller's. */
L2C_API void l2c_free(Engine* e) {
    if (!e) return;
    free_state(&e->state);
    free(e->layer_matrices);
    free(e);
}
