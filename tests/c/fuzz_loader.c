/*
 * The fuzz target for the engine's loader: llama2.c checkpoints in both formats (fp32 legacy and
 * int8 version 2), as bytes from anywhere. Built with the engine in one translation unit, under
 * AddressSanitizer and UndefinedBehaviorSanitizer with float-cast-overflow (llama2c.cflags).
 *
 * Two drivers call it:
 *   fuzz_driver.c   a deterministic mutation driver: a fixed seed, a fixed number of cases (the
 *                   corpus `invoke test` runs), and replays of saved crashes (tests/fuzz/crashes/)
 *   libFuzzer       coverage-guided campaigns: `invoke fuzz --minutes N`
 *
 * Every input must end in a clean error code or a loaded engine that runs: a sanitizer report, a
 * crash or a hang is a bug.
 */
#include "../../wasm/run.c"

/* The KV cache and attention scores a header asks for can reach gigabytes with a file of a few
 * bytes of weights: allocating (and zeroing) that for every case would make the corpus crawl. The
 * hostile-header table (tests/test_hostile_headers.py) covers large states, natively and in
 * WebAssembly; here states above this are checked but not allocated. */
#define FUZZ_MAX_STATE_BYTES (64u << 20)

/* Forward passes run on each loaded model: the first positions touch every weight. */
#define FUZZ_STEPS 2

/* What a failed check does: libFuzzer saves the input of any abort; the driver saves it first. */
#ifndef FUZZ_FAIL
#define FUZZ_FAIL(why) (fprintf(stderr, "fuzz target: %s\n", why), abort())
#endif

static size_t fuzz_state_bytes(const Config* c) {
    size_t cache, att;
    if (!state_sizes(c, &cache, &att)) return SIZE_MAX;
    double bytes = (2.0 * cache + att + 4.0 * c->hidden_dim + 8.0 * c->dim + c->vocab_size) * 4.0;
    return bytes > (double)SIZE_MAX ? SIZE_MAX : (size_t)bytes;
}

int LLVMFuzzerTestOneInput(const uint8_t* input, size_t size) {
    /* A buffer of exactly the input's size, 4-byte aligned as the engine requires (malloc is):
     * any read past the end is an ASan report. */
    unsigned char* data = malloc(size ? size : 1);
    if (!data) return 0;
    if (size) memcpy(data, input, size);
    int config[7];
    int rc = l2c_check(data, size, config);
    if (rc != L2C_OK) {
        if (l2c_last_error()[0] == '\0') FUZZ_FAIL("an error without a message");
        free(data);
        return 0;
    }
    Layout layout;
    read_layout(data, size, &layout);
    if (fuzz_state_bytes(&layout.config) <= FUZZ_MAX_STATE_BYTES) {
        Engine* e = l2c_load(data, size);
        if (e) {
            int steps = config[6] < FUZZ_STEPS ? config[6] : FUZZ_STEPS;
            for (int pos = 0; pos < steps; pos++) {
                int token = (1 + 7 * pos) % config[5];
                if (!l2c_forward(e, token, pos)) FUZZ_FAIL("forward failed on valid arguments");
            }
            l2c_free(e);
        } else if (l2c_last_error_code() != L2C_ERR_NOMEM) {
            FUZZ_FAIL("a checked checkpoint did not load");
        }
    }
    free(data);
    return 0;
}
