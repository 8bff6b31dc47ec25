/*
 * llama2.c's sampler (run.c @ 350e04f), transcribed function for function: the oracle that
 * tests/test_sampler.py compares llama2c.sampler with. Build: gcc -O2 -ffp-contract=off ... -lm
 *
 *   sampler_ref rng SEED COUNT        prints COUNT lines "u32 f32bits" of random_u32/random_f32
 *   sampler_ref cases FILE            runs the sampling cases in FILE (binary, see main) and prints
 *                                     one line per case: the chosen ids, then the final rng state
 *   sampler_ref softmax FILE          prints the float32 bits of softmax(logits) for each case
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float prob;
    int index;
} ProbIndex;

typedef struct {
    int vocab_size;
    ProbIndex* probindex;
    float temperature;
    float topp;
    unsigned long long rng_state;
} Sampler;

void softmax(float* x, int size) {
    float max_val = x[0];
    for (int i = 1; i < size; i++) {
        if (x[i] > max_val) {
            max_val = x[i];
        }
    }
    float sum = 0.0f;
    for (int i = 0; i < size; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (int i = 0; i < size; i++) {
        x[i] /= sum;
    }
}

int sample_argmax(float* probabilities, int n) {
    int max_i = 0;
    float max_p = probabilities[0];
    for (int i = 1; i < n; i++) {
        if (probabilities[i] > max_p) {
            max_i = i;
            max_p = probabilities[i];
        }
    }
    return max_i;
}

int sample_mult(float* probabilities, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += probabilities[i];
        if (coin < cdf) {
            return i;
        }
    }
    return n - 1;
}

int compare(const void* a, const void* b) {
    ProbIndex* a_ = (ProbIndex*)a;
    ProbIndex* b_ = (ProbIndex*)b;
    if (a_->prob > b_->prob) return -1;
    if (a_->prob < b_->prob) return 1;
    return 0;
}

int sample_topp(float* probabilities, int n, float topp, ProbIndex* probindex, float coin) {
    int n0 = 0;
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++) {
        if (probabilities[i] >= cutoff) {
            probindex[n0].index = i;
            probindex[n0].prob = probabilities[i];
            n0++;
        }
    }
    qsort(probindex, n0, sizeof(ProbIndex), compare);
    float cumulative_prob = 0.0f;
    int last_idx = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cumulative_prob += probindex[i].prob;
        if (cumulative_prob > topp) {
            last_idx = i;
            break;
        }
    }
    float r = coin * cumulative_prob;
    float cdf = 0.0f;
    for (int i = 0; i <= last_idx; i++) {
        cdf += probindex[i].prob;
        if (r < cdf) {
            return probindex[i].index;
        }
    }
    return probindex[last_idx].index;
}

unsigned int random_u32(unsigned long long* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (*state * 0x2545F4914F6CDD1Dull) >> 32;
}

float random_f32(unsigned long long* state) {
    return (random_u32(state) >> 8) / 16777216.0f;
}

int sample(Sampler* sampler, float* logits) {
    int next;
    if (sampler->temperature == 0.0f) {
        next = sample_argmax(logits, sampler->vocab_size);
    } else {
        for (int q = 0; q < sampler->vocab_size; q++) {
            logits[q] /= sampler->temperature;
        }
        softmax(logits, sampler->vocab_size);
        float coin = random_f32(&sampler->rng_state);
        if (sampler->topp <= 0 || sampler->topp >= 1) {
            next = sample_mult(logits, sampler->vocab_size, coin);
        } else {
            next = sample_topp(logits, sampler->vocab_size, sampler->topp, sampler->probindex, coin);
        }
    }
    return next;
}

/* Case file: int32 count, then per case: int32 n, float temperature, float topp,
 * uint64 seed, int32 draws, float logits[n]. Each draw samples a fresh copy of the logits
 * (run.c's sample() scribbles on them); the rng state carries over between draws. */
static int read_exact(FILE* f, void* p, size_t n) { return fread(p, 1, n, f) == n; }

int main(int argc, char** argv) {
    if (argc == 4 && strcmp(argv[1], "rng") == 0) {
        unsigned long long state = strtoull(argv[2], NULL, 0);
        int count = atoi(argv[3]);
        for (int i = 0; i < count; i++) {
            unsigned long long copy = state;
            unsigned int u = random_u32(&copy);
            float f = random_f32(&state);
            uint32_t bits;
            memcpy(&bits, &f, 4);
            printf("%u %08x\n", u, bits);
        }
        return 0;
    }
    if (argc != 3 || (strcmp(argv[1], "cases") != 0 && strcmp(argv[1], "softmax") != 0)) {
        fprintf(stderr, "usage: sampler_ref rng SEED COUNT | cases FILE | softmax FILE\n");
        return 2;
    }
    int softmax_only = strcmp(argv[1], "softmax") == 0;
    FILE* f = fopen(argv[2], "rb");
    if (!f) return 2;
    int32_t count;
    if (!read_exact(f, &count, 4)) return 2;
    for (int c = 0; c < count; c++) {
        int32_t n, draws;
        float temperature, topp;
        unsigned long long seed;
        if (!read_exact(f, &n, 4) || !read_exact(f, &temperature, 4) || !read_exact(f, &topp, 4) ||
            !read_exact(f, &seed, 8) || !read_exact(f, &draws, 4)) return 2;
        float* logits = malloc(n * sizeof(float));
        float* work = malloc(n * sizeof(float));
        if (!read_exact(f, logits, n * sizeof(float))) return 2;
        if (softmax_only) {
            memcpy(work, logits, n * sizeof(float));
            softmax(work, n);
            for (int i = 0; i < n; i++) {
                uint32_t bits;
                memcpy(&bits, &work[i], 4);
                printf("%08x%c", bits, i == n - 1 ? '\n' : ' ');
            }
        } else {
            Sampler s = {n, malloc(n * sizeof(ProbIndex)), temperature, topp, seed};
            for (int d = 0; d < draws; d++) {
                memcpy(work, logits, n * sizeof(float));
                printf("%d ", sample(&s, work));
            }
            printf("%llu\n", s.rng_state);
            free(s.probindex);
        }
        free(logits);
        free(work);
    }
    fclose(f);
    return 0;
}
