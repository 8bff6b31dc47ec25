/*
 * A driver for the engine, compiled together with it, for the sanitizer tests
 * (tests/test_sanitizers.py builds it with -fsanitize=address,undefined).
 *
 *   engine_check [--misaligned] [--threads N] CHECKPOINT STEPS [FIRST_TOKEN [FIRST_POS]]
 *       Reads CHECKPOINT into a malloc'd buffer of exactly its size (so ASan sees any overread),
 *       checks and loads it, then runs STEPS forward passes: token i is
 *       (FIRST_TOKEN + 31 * i) mod vocab_size (FIRST_TOKEN itself at i = 0, unreduced), at
 *       position FIRST_POS + i. Prints "ok <7 config values> <checksum>" where checksum is a
 *       64-bit FNV-1a over the 32-bit words of every step's logits, or "error <code>: <message>".
 *       --misaligned places the checkpoint at an odd address (the engine must refuse it).
 *       --threads N computes with N threads (l2c_set_threads); the checksum must not change.
 *   engine_check --api
 *       Calls the API with NULL and bad arguments and prints each result.
 *   engine_check --sample CASES
 *       Runs the sampler's functions (l2c_nucleus, l2c_choose, l2c_argmax) on CASES random logit
 *       sets of random sizes, each in buffers of exactly its size, and prints "ok <checksum>" of
 *       their results.
 *
 * Exit status: 0 ok, 3 an engine error (the expected outcome for bad input), 2 a usage or I/O
 * problem of the driver itself. Sanitizer reports come with their own exit codes.
 */
#include "../../wasm/run.c"

static int check_report(int rc) {
    printf("error %d: %s\n", rc, l2c_last_error());
    return 3;
}

static int api_check(void) {
    int cfg[7];
    unsigned char small[8] = {0};
    printf("check_null %d\n", l2c_check(NULL, 100, cfg));
    printf("check_null_empty %d\n", l2c_check(NULL, 0, cfg));
    printf("check_short %d\n", l2c_check(small, sizeof(small), NULL));
    printf("load_null %d\n", l2c_load(NULL, 0) == NULL ? l2c_last_error_code() : -1);
    printf("forward_null %d\n", l2c_forward(NULL, 0, 0) == NULL ? l2c_last_error_code() : -1);
    printf("config_null %d\n", l2c_config(NULL, cfg));
    printf("shared_null %d\n", l2c_shared_classifier(NULL));
    l2c_free(NULL);
    printf("free_null ok\n");
    return 0;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static float random_unit(void) { /* xorshift64*, [0, 1) */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (float)((g_rng * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

static int sample_check(int cases) {
    static const float temperatures[] = {1.0f, 0.8f, 0.05f, 2.5f};
    static const float topps[] = {0.9f, 0.5f, 0.99f, 1e-4f};
    uint64_t hash = 1469598103934665603ULL;
    for (int c = 0; c < cases; c++) {
        int n = c % 7 == 0 ? 32000 : 2 + (int)(random_unit() * 3000);
        float scale = c % 3 == 0 ? 0.3f : c % 3 == 1 ? 5.0f : 40.0f;
        float* logits = malloc((size_t)n * sizeof(float));
        int32_t* ids = malloc((size_t)n * sizeof(int32_t));
        float* cdf = malloc((size_t)n * sizeof(float));
        void* work = malloc(l2c_nucleus_work_size(n));
        if (!logits || !ids || !cdf || !work) return 2;
        for (int i = 0; i < n; i++) {
            logits[i] = (random_unit() - 0.5f) * scale;
            if (c % 5 == 0) logits[i] = (float)(int)logits[i]; /* ties */
        }
        if (c % 11 == 0) logits[c % n] = INFINITY; /* left to numpy: 0 */
        int count = l2c_nucleus(logits, n, temperatures[c % 4], topps[c / 4 % 4], -17.5f, -60.0f,
                                ids, cdf, work);
        int token = count > 0 ? l2c_choose(ids, cdf, count, random_unit()) : -1;
        int results[3] = {count, token, l2c_argmax(logits, n)};
        for (int k = 0; k < 3; k++) {
            hash ^= (uint32_t)results[k];
            hash *= 1099511628211ULL;
        }
        free(logits);
        free(ids);
        free(cdf);
        free(work);
    }
    printf("ok %016llx\n", (unsigned long long)hash);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 2 && strcmp(argv[1], "--api") == 0) return api_check();
    if (argc == 3 && strcmp(argv[1], "--sample") == 0) return sample_check(atoi(argv[2]));
    int misaligned = 0, threads = 0;
    while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        if (strcmp(argv[1], "--misaligned") == 0) {
            misaligned = 1;
        } else if (strcmp(argv[1], "--threads") == 0 && argc > 2) {
            threads = atoi(argv[2]);
            argv++;
            argc--;
        } else {
            break;
        }
        argv++;
        argc--;
    }
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: engine_check [--misaligned] [--threads N] CHECKPOINT STEPS "
                        "[TOKEN [POS]]\n");
        return 2;
    }
    FILE* f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char* block = malloc((size_t)size + (size_t)misaligned);
    if (!block && size + misaligned > 0) return 2;
    unsigned char* data = block + misaligned;
    if (size > 0 && fread(data, 1, (size_t)size, f) != (size_t)size) return 2;
    fclose(f);
    int steps = atoi(argv[2]);
    long long first_token = argc > 3 ? atoll(argv[3]) : 1;
    int first_pos = argc > 4 ? atoi(argv[4]) : 0;

    int cfg[7] = {0};
    int rc = l2c_check(data, (size_t)size, cfg);
    int status = 0;
    Engine* e = NULL;
    if (rc != L2C_OK) {
        status = check_report(rc);
        goto done;
    }
    e = l2c_load(data, (size_t)size);
    if (!e) {
        status = check_report(l2c_last_error_code());
        goto done;
    }
    if (threads > 0 && l2c_set_threads(e, threads) != threads) {
        printf("could not get %d threads\n", threads);
        status = 2;
        goto done;
    }
    int loaded[7];
    if (l2c_config(e, loaded) != L2C_OK || memcmp(loaded, cfg, sizeof(cfg)) != 0) {
        printf("config mismatch\n");
        status = 2;
        goto done;
    }
    int vocab = cfg[5];
    uint64_t hash = 1469598103934665603ULL;
    for (int i = 0; i < steps; i++) {
        int token = i == 0 ? (int)first_token : (int)((first_token + 31LL * i) % vocab);
        float* logits = l2c_forward(e, token, first_pos + i);
        if (!logits) {
            status = check_report(l2c_last_error_code());
            goto done;
        }
        for (int j = 0; j < vocab; j++) {
            uint32_t word;
            memcpy(&word, &logits[j], sizeof(word));
            hash ^= word;
            hash *= 1099511628211ULL;
        }
    }
    printf("ok %d %d %d %d %d %d %d shared=%d %016llx\n", cfg[0], cfg[1], cfg[2], cfg[3], cfg[4],
           cfg[5], cfg[6], l2c_shared_classifier(e), (unsigned long long)hash);
done:
    l2c_free(e);
    free(block);
    return status;
}
