/*
 * The engine's verdict on each checkpoint file, natively (tests/test_hostile_headers.py compares it
 * with tests/wasm/verdicts.mjs, the same steps in the WebAssembly build).
 *
 *   verdicts FILE...
 * For each file, one line: "<code>\t<message>" where code is l2c_check's, then l2c_load's, then
 * for a loaded model "0\tok <checksum>" after a forward pass at position 0 and at seq_len - 1 (the
 * KV cache's last row). The checksum is FNV-1a over the 32-bit words of position 0's logits, every
 * NaN counted as 0x7fc00000 (x86 and WebAssembly make NaNs with different sign bits). Later
 * positions go through RoPE's cosf/sinf and softmax's expf, where glibc and musl may differ in the
 * last bit (stories260K at position 511 does), so only position 0 is compared bit for bit.
 */
#include "../../wasm/run.c"

int main(int argc, char** argv) {
    for (int i = 1; i < argc; i++) {
        FILE* f = fopen(argv[i], "rb");
        if (!f) return 2;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        unsigned char* data = malloc(size > 0 ? (size_t)size : 1);
        if (!data || (size > 0 && fread(data, 1, (size_t)size, f) != (size_t)size)) return 2;
        fclose(f);
        int config[7];
        Engine* e = NULL;
        int rc = l2c_check(data, (size_t)size, config);
        if (rc == L2C_OK) {
            e = l2c_load(data, (size_t)size);
            rc = e ? L2C_OK : l2c_last_error_code();
        }
        if (e) {
            uint64_t hash = 1469598103934665603ULL;
            int positions[2] = {0, config[6] - 1};
            for (int p = 0; p < 2; p++) {
                float* logits = l2c_forward(e, 1 % config[5], positions[p]);
                if (!logits) {
                    rc = l2c_last_error_code();
                    break;
                }
                for (int j = 0; j < config[5] && p == 0; j++) {
                    uint32_t word;
                    memcpy(&word, &logits[j], sizeof(word));
                    if (logits[j] != logits[j]) word = 0x7fc00000u;
                    hash = (hash ^ word) * 1099511628211ULL;
                }
            }
            if (rc == L2C_OK) printf("0\tok %016llx\n", (unsigned long long)hash);
            l2c_free(e);
        }
        if (rc != L2C_OK) printf("%d\t%s\n", rc, l2c_last_error());
        free(data);
    }
    return 0;
}
