/*
 * A deterministic mutation driver for the loader's fuzz target (fuzz_loader.c), so that a fixed
 * corpus runs the same cases on every machine, in `invoke test`.
 *
 *   fuzz_driver run SEED COUNT CRASH_DIR SEED_FILE...
 *       Runs COUNT cases. Case i is one of the seed files (valid checkpoints), changed by a few
 *       mutations drawn from a generator seeded with (SEED, i) alone: any case can be rebuilt on
 *       its own. When a case fails (a sanitizer report or the target's own check), its bytes are
 *       written to CRASH_DIR/case-SEED-i.bin before the process dies, to become a test case.
 *       Prints "cases COUNT accepted A errors E" and one "code C N" line per error code.
 *   fuzz_driver replay FILE...
 *       Runs each file through the target as it is (the saved crashes).
 *
 * Mutations, chosen to reach past the header checks into the weights and the run state:
 *   - an int32 of either header set to an edge value (0, +-1, powers of two, INT32_MIN/MAX, ...)
 *   - random bit flips anywhere
 *   - a float in the body set to NaN, +-inf, a huge or a tiny value (int8 scales and norms)
 *   - the int8 header's shared flag or group size set to an edge value
 *   - truncation, or random bytes appended
 *   - the length made to fit the (mutated) header exactly, when that is small: the case then
 *     passes the size check and is loaded and run
 */
#include <sanitizer/common_interface_defs.h>
#include <signal.h>

static void save_current_case(void);
#define FUZZ_FAIL(why) (fprintf(stderr, "fuzz target: %s\n", why), save_current_case(), abort())
#include "fuzz_loader.c"

#define MAX_FIT_BYTES (1u << 21) /* resize a case to its header's size only up to 2 MB */

typedef struct {
    uint64_t state;
} Rng;

static uint64_t next_u64(Rng* r) { /* splitmix64 */
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t below(Rng* r, uint32_t n) { return (uint32_t)(next_u64(r) % n); }

typedef struct {
    unsigned char* data;
    size_t size;
} Bytes;

static Bytes g_case; /* the case running now, saved when it fails */
static const char* g_crash_dir;
static unsigned long long g_seed, g_index;

static void save_current_case(void) {
    if (!g_crash_dir) return;
    char path[4096];
    snprintf(path, sizeof(path), "%s/case-%llu-%llu.bin", g_crash_dir, g_seed, g_index);
    FILE* f = fopen(path, "wb");
    if (!f) return;
    if (g_case.size) fwrite(g_case.data, 1, g_case.size, f);
    fclose(f);
    fprintf(stderr, "fuzz case saved: %s\n", path);
}

static Bytes read_file(const char* path) {
    Bytes b = {0};
    FILE* f = fopen(path, "rb");
    if (!f) return b;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.data = malloc(n > 0 ? (size_t)n : 1);
    b.size = n > 0 && fread(b.data, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return b;
}

static void resize(Bytes* b, size_t size, Rng* r) {
    b->data = realloc(b->data, size ? size : 1);
    for (size_t i = b->size; i < size; i++) b->data[i] = (unsigned char)below(r, 256);
    b->size = size;
}

static int32_t edge_int(Rng* r, int32_t original) {
    static const int32_t edges[] = {0, 1, -1, 2, 3, 4, 7, 8, 16, 64, 255, 256, 4096, 65535, 65536,
                                    65537, 262144, 262145, 1048576, 1048577, 1 << 19, 1 << 30,
                                    INT32_MAX, INT32_MIN, -2, -512, 0x616b3432};
    switch (below(r, 3)) {
    case 0: return edges[below(r, sizeof(edges) / sizeof(edges[0]))];
    case 1: return (int32_t)((uint32_t)original + below(r, 9) - 4u); /* wraps, no UB */
    default: return (int32_t)((uint32_t)original * 2u);
    }
}

static void mutate(Bytes* b, Rng* r) {
    switch (below(r, 7)) {
    case 0: { /* an int32 of the header */
        size_t span = b->size < V2_HEADER_BYTES ? b->size : V2_HEADER_BYTES;
        if (span < 4) break;
        size_t at = 4 * below(r, (uint32_t)(span / 4));
        int32_t v;
        memcpy(&v, b->data + at, 4);
        v = edge_int(r, v);
        memcpy(b->data + at, &v, 4);
        break;
    }
    case 1: /* bit flips */
        for (uint32_t n = 1 + below(r, 8); n > 0 && b->size; n--) {
            b->data[below(r, (uint32_t)b->size)] ^= (unsigned char)(1u << below(r, 8));
        }
        break;
    case 2: { /* a special float in the body */
        static const float specials[] = {NAN, INFINITY, -INFINITY, 3e38f, -3e38f, 1e-45f, 0.0f,
                                         1e30f};
        if (b->size < 8) break;
        size_t at = 4 * below(r, (uint32_t)(b->size / 4));
        float v = specials[below(r, sizeof(specials) / sizeof(specials[0]))];
        memcpy(b->data + at, &v, 4);
        break;
    }
    case 3: /* the int8 header's flag and group size */
        if (b->size >= 41) {
            if (below(r, 2)) b->data[36] = (unsigned char)below(r, 4);
            int32_t g = edge_int(r, 0);
            memcpy(b->data + 37, &g, 4);
        }
        break;
    case 4: /* truncate */
        if (b->size) b->size = below(r, (uint32_t)b->size);
        break;
    case 5: /* append */
        resize(b, b->size + 1 + below(r, 64), r);
        break;
    default: { /* many floats at once: a whole tensor's worth of NaN or inf */
        if (b->size < 64) break;
        size_t at = 4 * below(r, (uint32_t)(b->size / 4));
        size_t n = 1 + below(r, 256);
        float v = below(r, 2) ? NAN : INFINITY;
        for (size_t i = 0; i < n && at + 4 * i + 4 <= b->size; i++) memcpy(b->data + at + 4 * i, &v, 4);
        break;
    }
    }
}

/* Makes the case exactly as long as its header implies, when the header reads and that is small. */
static void fit_to_header(Bytes* b, Rng* r) {
    Layout l;
    if (read_layout(b->data, b->size, &l) != L2C_OK) return;
    int64_t want = checkpoint_bytes(&l);
    if (want > 0 && want <= MAX_FIT_BYTES) resize(b, (size_t)want, r);
}

/* UBSan reports end in abort() (UBSAN_OPTIONS abort_on_error=1, set by tests/fuzz/corpus.py), a
 * crash in a signal: save the case, then die of the same signal. ASan calls the death callback. */
static void on_fatal_signal(int sig) {
    save_current_case();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char** argv) {
    __sanitizer_set_death_callback(save_current_case);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGILL, on_fatal_signal);
    signal(SIGFPE, on_fatal_signal);
    if (argc >= 3 && strcmp(argv[1], "replay") == 0) {
        for (int i = 2; i < argc; i++) {
            Bytes b = read_file(argv[i]);
            LLVMFuzzerTestOneInput(b.data ? b.data : (unsigned char*)"", b.size);
            printf("replayed %s: %s\n", argv[i], l2c_last_error()[0] ? l2c_last_error() : "ok");
            free(b.data);
        }
        return 0;
    }
    if (argc < 6 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "usage: fuzz_driver run SEED COUNT CRASH_DIR SEED_FILE... | "
                        "fuzz_driver replay FILE...\n");
        return 2;
    }
    g_seed = strtoull(argv[2], NULL, 10);
    unsigned long long count = strtoull(argv[3], NULL, 10);
    g_crash_dir = argv[4];
    int n_seeds = argc - 5;
    Bytes* seeds = calloc((size_t)n_seeds, sizeof(Bytes));
    for (int i = 0; i < n_seeds; i++) {
        seeds[i] = read_file(argv[5 + i]);
        if (!seeds[i].size) {
            fprintf(stderr, "cannot read seed %s\n", argv[5 + i]);
            return 2;
        }
    }
    unsigned long long accepted = 0, errors[8] = {0};
    for (g_index = 0; g_index < count; g_index++) {
        Rng r = {g_seed * 0x100000001B3ull ^ (g_index * 0x9E3779B97F4A7C15ull)};
        next_u64(&r);
        const Bytes* seed = &seeds[below(&r, (uint32_t)n_seeds)];
        g_case.size = 0;
        resize(&g_case, seed->size, &r);
        memcpy(g_case.data, seed->data, seed->size);
        for (uint32_t m = 1 + below(&r, 3); m > 0; m--) mutate(&g_case, &r);
        if (below(&r, 2)) fit_to_header(&g_case, &r);
        LLVMFuzzerTestOneInput(g_case.data, g_case.size);
        int code = l2c_last_error_code();
        if (code == L2C_OK) accepted++;
        else errors[code < 8 ? code : 7]++;
    }
    printf("cases %llu accepted %llu errors %llu\n", count, accepted, count - accepted);
    for (int c = 1; c < 8; c++) if (errors[c]) printf("code %d %llu\n", c, errors[c]);
    for (int i = 0; i < n_seeds; i++) free(seeds[i].data);
    free(seeds);
    free(g_case.data);
    return 0;
}
