/*
 * llama2c-web engine: the Llama-2 transformer forward pass, in one C11 file.
 *
 * The same source builds two ways:
 *   gcc  -> a shared library that the Python package loads with ctypes (the command line, the tests)
 *   emcc -> a WebAssembly module that the browser worker drives (the page, the widget)
 *
 * The engine does no file I/O. The caller owns the checkpoint bytes and hands the engine a pointer
 * and a length (an mmap natively, a copy of the downloaded ArrayBuffer in the browser). The engine
 * checks every size against those bytes before it touches any weight, and never aborts: each failure
 * is an error code plus a message from l2c_last_error().
 *
 * Arithmetic follows llama2.c's run.c operation for operation (same summation order, no fused
 * multiply-add), so fp32 logits are bit-identical to run.c's and sampled text is byte-identical.
 * The matmul gets its speed from computing several rows at once, each row still summed in order.
 *
 * Sections, in the order data flows:
 *   1. the exported API and error codes
 *   2. the checkpoint: header, validation, weight pointers
 *   3. the run state (activations and KV cache)
 *   4. the math kernels
 *   5. the forward pass
 *   6. the exported functions
 */

#include <math.h>
#include <stdarg.h>
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
 * 2. The checkpoint (llama2.c's legacy format, "version 0").
 *
 * header: 7 x int32   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *                     (vocab_size < 0 means the classifier is unshared and stored last)
 * then fp32 tensors, each row-major:
 *   token_embedding   (vocab_size, dim)
 *   rms_att           (n_layers, dim)
 *   wq                (n_layers, dim, dim)          rows are outputs: (n_heads*head_size, dim)
 *   wk                (n_layers, kv_dim, dim)
 *   wv                (n_layers, kv_dim, dim)
 *   wo                (n_layers, dim, dim)
 *   rms_ffn           (n_layers, dim)
 *   w1                (n_layers, hidden_dim, dim)
 *   w2                (n_layers, dim, hidden_dim)
 *   w3                (n_layers, hidden_dim, dim)
 *   rms_final         (dim,)
 *   freq_cis_real     (seq_len * head_size / 2,)    unused: RoPE is computed on the fly
 *   freq_cis_imag     (seq_len * head_size / 2,)    unused
 *   wcls              (vocab_size, dim)             only when unshared
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

typedef struct {
    const float* token_embedding; /* (vocab_size, dim) */
    const float* rms_att;         /* (n_layers, dim) */
    const float* wq;              /* (n_layers, dim, dim) */
    const float* wk;              /* (n_layers, kv_dim, dim) */
    const float* wv;              /* (n_layers, kv_dim, dim) */
    const float* wo;              /* (n_layers, dim, dim) */
    const float* rms_ffn;         /* (n_layers, dim) */
    const float* w1;              /* (n_layers, hidden_dim, dim) */
    const float* w2;              /* (n_layers, dim, hidden_dim) */
    const float* w3;              /* (n_layers, hidden_dim, dim) */
    const float* rms_final;       /* (dim,) */
    const float* wcls;            /* (vocab_size, dim) */
} Weights;

#define HEADER_BYTES (7 * (int64_t)sizeof(int32_t))

/* Upper bounds far above any llama2.c model yet small enough that every size below fits int64. */
#define MAX_DIM (1 << 16)
#define MAX_HIDDEN (1 << 18)
#define MAX_LAYERS (1 << 10)
#define MAX_VOCAB (1 << 20)
#define MAX_SEQ (1 << 20)

/* Reads the header from the buffer and checks it. Returns L2C_OK and fills cfg and *shared. */
static int read_config(const unsigned char* data, size_t size, Config* cfg, int* shared) {
    if (size < (size_t)HEADER_BYTES) {
        return fail(L2C_ERR_TRUNCATED, "checkpoint is %zu bytes, shorter than its %d-byte header",
                    size, (int)HEADER_BYTES);
    }
    int32_t h[7];
    memcpy(h, data, sizeof(h)); /* little-endian, as llama2.c writes it */
    cfg->dim = h[0];
    cfg->hidden_dim = h[1];
    cfg->n_layers = h[2];
    cfg->n_heads = h[3];
    cfg->n_kv_heads = h[4];
    cfg->vocab_size = h[5] < 0 && h[5] != INT32_MIN ? -h[5] : h[5];
    cfg->seq_len = h[6];
    *shared = h[5] > 0;

    struct { const char* name; int32_t value; int32_t max; } fields[] = {
        {"dim", h[0], MAX_DIM},          {"hidden_dim", h[1], MAX_HIDDEN},
        {"n_layers", h[2], MAX_LAYERS},  {"n_heads", h[3], MAX_DIM},
        {"n_kv_heads", h[4], MAX_DIM},   {"vocab_size", cfg->vocab_size, MAX_VOCAB},
        {"seq_len", h[6], MAX_SEQ},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i].value <= 0 || fields[i].value > fields[i].max) {
            return fail(L2C_ERR_HEADER, "bad header: %s = %d (must be between 1 and %d)",
                        fields[i].name, (int)(i == 5 ? h[5] : fields[i].value), fields[i].max);
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

/* The number of fp32 values the weights occupy, freq_cis tables included. */
static int64_t weight_floats(const Config* c, int shared) {
    int64_t dim = c->dim, hidden = c->hidden_dim, layers = c->n_layers, vocab = c->vocab_size;
    int64_t head_size = dim / c->n_heads;
    int64_t kv_dim = dim * c->n_kv_heads / c->n_heads;
    int64_t n = vocab * dim;                     /* token_embedding */
    n += layers * dim;                           /* rms_att */
    n += layers * dim * dim;                     /* wq */
    n += 2 * layers * kv_dim * dim;              /* wk, wv */
    n += layers * dim * dim;                     /* wo */
    n += layers * dim;                           /* rms_ffn */
    n += 3 * layers * hidden * dim;              /* w1, w2, w3 */
    n += dim;                                    /* rms_final */
    n += 2 * ((int64_t)c->seq_len * head_size / 2); /* freq_cis_real, freq_cis_imag */
    if (!shared) n += vocab * dim;               /* wcls */
    return n;
}

static void map_weights(Weights* w, const Config* c, const float* p, int shared) {
    int64_t dim = c->dim, hidden = c->hidden_dim, layers = c->n_layers;
    int64_t head_size = dim / c->n_heads;
    int64_t kv_dim = dim * c->n_kv_heads / c->n_heads;
    w->token_embedding = p; p += (int64_t)c->vocab_size * dim;
    w->rms_att = p;         p += layers * dim;
    w->wq = p;              p += layers * dim * dim;
    w->wk = p;              p += layers * kv_dim * dim;
    w->wv = p;              p += layers * kv_dim * dim;
    w->wo = p;              p += layers * dim * dim;
    w->rms_ffn = p;         p += layers * dim;
    w->w1 = p;              p += layers * hidden * dim;
    w->w2 = p;              p += layers * dim * hidden;
    w->w3 = p;              p += layers * hidden * dim;
    w->rms_final = p;       p += dim;
    p += 2 * ((int64_t)c->seq_len * head_size / 2); /* skip freq_cis_real and freq_cis_imag */
    w->wcls = shared ? w->token_embedding : p;
}

/* ---------------------------------------------------------------------------------------------
 * 3. The run state: activations for one position, and the KV cache for all of them.
 */

typedef struct {
    float* x;      /* (dim,) the residual stream */
    float* xb;     /* (dim,) scratch: normed input, then attention output */
    float* xb2;    /* (dim,) scratch */
    float* hb;     /* (hidden_dim,) FFN scratch */
    float* hb2;    /* (hidden_dim,) FFN scratch */
    float* q;      /* (dim,) queries for this position */
    float* att;    /* (n_heads, seq_len) attention scores */
    float* logits; /* (vocab_size,) the output */
    float* key_cache;   /* (n_layers, seq_len, kv_dim) */
    float* value_cache; /* (n_layers, seq_len, kv_dim) */
} RunState;

typedef struct {
    Config config;
    Weights weights;
    RunState state;
    const unsigned char* data; /* the caller's checkpoint bytes, used in place */
    size_t size;
    int shared_classifier;
} Engine;

static void free_state(RunState* s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->hb); free(s->hb2); free(s->q);
    free(s->att); free(s->logits); free(s->key_cache); free(s->value_cache);
    memset(s, 0, sizeof(*s));
}

static int alloc_state(RunState* s, const Config* c) {
    size_t kv_dim = (size_t)c->dim * c->n_kv_heads / c->n_heads;
    size_t cache = (size_t)c->n_layers * c->seq_len * kv_dim;
    memset(s, 0, sizeof(*s));
    s->x = calloc(c->dim, sizeof(float));
    s->xb = calloc(c->dim, sizeof(float));
    s->xb2 = calloc(c->dim, sizeof(float));
    s->hb = calloc(c->hidden_dim, sizeof(float));
    s->hb2 = calloc(c->hidden_dim, sizeof(float));
    s->q = calloc(c->dim, sizeof(float));
    s->att = calloc((size_t)c->n_heads * c->seq_len, sizeof(float));
    s->logits = calloc(c->vocab_size, sizeof(float));
    s->key_cache = calloc(cache, sizeof(float));
    s->value_cache = calloc(cache, sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->att || !s->logits ||
        !s->key_cache || !s->value_cache) {
        free_state(s);
        return fail(L2C_ERR_NOMEM, "out of memory: the KV cache alone needs %.1f MB",
                    2.0 * cache * sizeof(float) / 1e6);
    }
    return L2C_OK;
}

/* ---------------------------------------------------------------------------------------------
 * 4. Math kernels. Each sums in the same order as run.c, so results are bit-identical to it.
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

/*
 * W (d, n) @ x (n,) -> out (d,), for rows [row_begin, row_end).
 * Each row is one sequential sum over j, exactly as run.c computes it. Eight rows run side by side:
 * eight independent add chains keep the FPU busy, where a single chain waits on each add's latency.
 */
static void matmul_rows(float* out, const float* x, const float* w, int n, int row_begin,
                        int row_end) {
    int i = row_begin;
    for (; i + 8 <= row_end; i += 8) {
        const float* r = w + (size_t)i * n;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        float a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
        for (int j = 0; j < n; j++) {
            float xj = x[j];
            a0 += r[j] * xj;
            a1 += r[n + j] * xj;
            a2 += r[2 * (size_t)n + j] * xj;
            a3 += r[3 * (size_t)n + j] * xj;
            a4 += r[4 * (size_t)n + j] * xj;
            a5 += r[5 * (size_t)n + j] * xj;
            a6 += r[6 * (size_t)n + j] * xj;
            a7 += r[7 * (size_t)n + j] * xj;
        }
        out[i] = a0; out[i + 1] = a1; out[i + 2] = a2; out[i + 3] = a3;
        out[i + 4] = a4; out[i + 5] = a5; out[i + 6] = a6; out[i + 7] = a7;
    }
    for (; i < row_end; i++) {
        const float* r = w + (size_t)i * n;
        float a = 0.0f;
        for (int j = 0; j < n; j++) a += r[j] * x[j];
        out[i] = a;
    }
}

static void matmul(float* out, const float* x, const float* w, int n, int d) {
    matmul_rows(out, x, w, n, 0, d);
}

/* ---------------------------------------------------------------------------------------------
 * 5. The forward pass: one token at one position -> logits over the vocabulary.
 */

static float* forward(Engine* e, int token, int pos) {
    const Config* p = &e->config;
    const Weights* w = &e->weights;
    RunState* s = &e->state;
    float* x = s->x;
    int dim = p->dim;
    int kv_dim = p->dim * p->n_kv_heads / p->n_heads;
    int kv_mul = p->n_heads / p->n_kv_heads; /* query heads per key/value head */
    int hidden_dim = p->hidden_dim;
    int head_size = dim / p->n_heads;

    memcpy(x, w->token_embedding + (size_t)token * dim, dim * sizeof(float));

    for (int l = 0; l < p->n_layers; l++) {
        size_t loff = (size_t)l * p->seq_len * kv_dim; /* this layer's slice of the KV cache */
        float* k = s->key_cache + loff + (size_t)pos * kv_dim;
        float* v = s->value_cache + loff + (size_t)pos * kv_dim;

        /* attention: qkv projections, writing k and v straight into the cache */
        rmsnorm(s->xb, x, w->rms_att + (size_t)l * dim, dim);
        matmul(s->q, s->xb, w->wq + (size_t)l * dim * dim, dim, dim);
        matmul(k, s->xb, w->wk + (size_t)l * dim * kv_dim, dim, kv_dim);
        matmul(v, s->xb, w->wv + (size_t)l * dim * kv_dim, dim, kv_dim);

        /* RoPE: rotate each (even, odd) pair of q and k by a position-dependent angle */
        for (int i = 0; i < dim; i += 2) {
            int head_dim = i % head_size;
            float freq = 1.0f / powf(10000.0f, head_dim / (float)head_size);
            float val = pos * freq;
            float fcr = cosf(val);
            float fci = sinf(val);
            int rotn = i < kv_dim ? 2 : 1; /* 2 = q and k, 1 = q only */
            for (int r = 0; r < rotn; r++) {
                float* vec = r == 0 ? s->q : k;
                float v0 = vec[i];
                float v1 = vec[i + 1];
                vec[i] = v0 * fcr - v1 * fci;
                vec[i + 1] = v0 * fci + v1 * fcr;
            }
        }

        /* multi-head attention over positions 0..pos */
        for (int h = 0; h < p->n_heads; h++) {
            const float* q = s->q + h * head_size;
            float* att = s->att + (size_t)h * p->seq_len;
            size_t kv_off = (size_t)(h / kv_mul) * head_size;
            for (int t = 0; t <= pos; t++) {
                const float* kt = s->key_cache + loff + (size_t)t * kv_dim + kv_off;
                float score = 0.0f;
                for (int i = 0; i < head_size; i++) score += q[i] * kt[i];
                score /= sqrtf(head_size);
                att[t] = score;
            }
            softmax(att, pos + 1);
            float* xb = s->xb + h * head_size;
            memset(xb, 0, head_size * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float* vt = s->value_cache + loff + (size_t)t * kv_dim + kv_off;
                float a = att[t];
                for (int i = 0; i < head_size; i++) xb[i] += a * vt[i];
            }
        }
        matmul(s->xb2, s->xb, w->wo + (size_t)l * dim * dim, dim, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];

        /* feed-forward: w2(silu(w1 x) * w3 x) */
        rmsnorm(s->xb, x, w->rms_ffn + (size_t)l * dim, dim);
        matmul(s->hb, s->xb, w->w1 + (size_t)l * dim * hidden_dim, dim, hidden_dim);
        matmul(s->hb2, s->xb, w->w3 + (size_t)l * dim * hidden_dim, dim, hidden_dim);
        for (int i = 0; i < hidden_dim; i++) {
            float val = s->hb[i];
            val *= (1.0f / (1.0f + expf(-val)));
            val *= s->hb2[i];
            s->hb[i] = val;
        }
        matmul(s->xb, s->hb, w->w2 + (size_t)l * dim * hidden_dim, hidden_dim, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb[i];
    }

    rmsnorm(x, x, w->rms_final, dim);
    matmul(s->logits, x, w->wcls, dim, p->vocab_size);
    return s->logits;
}

/* ---------------------------------------------------------------------------------------------
 * 6. The exported API, shared by the native (ctypes) and browser (WebAssembly) backends.
 */

/* The message of the most recent failure, or "" after a success. */
L2C_API const char* l2c_last_error(void) { return g_error; }
L2C_API int l2c_last_error_code(void) { return g_error_code; }

/*
 * Checks a checkpoint without loading it. Fills config7 (7 ints, the header with a positive
 * vocab_size) when the header could be read. Returns L2C_OK or an error code.
 */
L2C_API int l2c_check(const unsigned char* data, size_t size, int* config7) {
    g_error[0] = '\0';
    g_error_code = L2C_OK;
    if (data == NULL && size > 0) return fail(L2C_ERR_ARGUMENT, "checkpoint pointer is NULL");
    Config c;
    int shared = 1;
    int rc = read_config(data, size, &c, &shared);
    if (rc != L2C_OK) return rc;
    if (config7) memcpy(config7, &c, sizeof(c));
    int64_t expected = HEADER_BYTES + weight_floats(&c, shared) * (int64_t)sizeof(float);
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
 * Loads a checkpoint from bytes the caller owns and keeps alive until l2c_free.
 * Returns an engine, or NULL with l2c_last_error() set.
 */
L2C_API Engine* l2c_load(const unsigned char* data, size_t size) {
    Config c;
    if (l2c_check(data, size, (int*)&c) != L2C_OK) return NULL;
    if (((uintptr_t)data) % sizeof(float) != 0) {
        fail(L2C_ERR_ARGUMENT, "checkpoint buffer must be 4-byte aligned");
        return NULL;
    }
    Engine* e = calloc(1, sizeof(Engine));
    if (!e) {
        fail(L2C_ERR_NOMEM, "out of memory");
        return NULL;
    }
    e->config = c;
    e->data = data;
    e->size = size;
    int32_t vocab_field;
    memcpy(&vocab_field, data + 5 * sizeof(int32_t), sizeof(vocab_field));
    e->shared_classifier = vocab_field > 0;
    map_weights(&e->weights, &c, (const float*)(data + HEADER_BYTES), e->shared_classifier);
    if (alloc_state(&e->state, &c) != L2C_OK) {
        free(e);
        return NULL;
    }
    return e;
}

/* Copies the 7 config values (vocab_size positive) into out. Returns L2C_OK or an error code. */
L2C_API int l2c_config(const Engine* e, int* out7) {
    if (!e || !out7) return fail(L2C_ERR_ARGUMENT, "l2c_config: NULL argument");
    memcpy(out7, &e->config, sizeof(Config));
    return L2C_OK;
}

L2C_API int l2c_shared_classifier(const Engine* e) { return e ? e->shared_classifier : -1; }

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
    if (token < 0 || token >= e->config.vocab_size) {
        fail(L2C_ERR_RANGE, "token %d out of range [0, %d)", token, e->config.vocab_size);
        return NULL;
    }
    if (pos < 0 || pos >= e->config.seq_len) {
        fail(L2C_ERR_RANGE, "position %d out of range [0, %d)", pos, e->config.seq_len);
        return NULL;
    }
    return forward(e, token, pos);
}

/* Frees the engine and its run state. The checkpoint bytes stay the caller's. */
L2C_API void l2c_free(Engine* e) {
    if (!e) return;
    free_state(&e->state);
    free(e);
}
