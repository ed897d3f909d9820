/* An application linking a model compiled ahead of time by qcc:
 *   qcc examples/mnist/mnist_cnn.onnx -O2 --int8 --calib examples/mnist/digits -o mnist.o
 *   cc examples/c/main.c mnist.o target/release/libqcc_runtime.a -I. -lm -lpthread -ldl -o mnist_app
 *   ./mnist_app examples/mnist/digits/digit_003.npy out.f32
 * It reads a float32 .npy input (of the shape in mnist.h), runs the model and writes the raw float32
 * output, so its bytes can be compared with `qcc run` (examples/c/check.sh does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mnist.h"

/* Reads n little-endian float32 values from a .npy file (format 1.0 or 2.0, '<f4', C order). */
static int read_npy_f32(const char *path, float *out, size_t n) {
    FILE *f = fopen(path, "rb");
    unsigned char head[12];
    if (!f || fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6) != 0) return -1;
    size_t len = head[8] | (size_t)head[9] << 8;
    if (head[6] >= 2) {
        if (fread(head + 10, 1, 2, f) != 2) return -1;
        len |= (size_t)head[10] << 16 | (size_t)head[11] << 24;
    }
    char *dict = malloc(len + 1);
    if (!dict || fread(dict, 1, len, f) != len) return -1;
    dict[len] = 0;
    int ok = strstr(dict, "'<f4'") != NULL && strstr(dict, "'fortran_order': False") != NULL;
    free(dict);
    ok = ok && fread(out, sizeof(float), n, f) == n;
    fclose(f);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT.npy OUTPUT.f32\n", argv[0]);
        return 2;
    }
    static float input[MNIST_INPUT0_SIZE];
    static float output[MNIST_OUTPUT0_SIZE];
    if (read_npy_f32(argv[1], input, MNIST_INPUT0_SIZE) != 0) {
        fprintf(stderr, "%s: expected a float32 .npy of %d values\n", argv[1], MNIST_INPUT0_SIZE);
        return 1;
    }
    size_t bytes = (mnist_scratch_bytes() + 63) / 64 * 64;
    void *scratch = aligned_alloc(64, bytes);
    const float *inputs[] = {input};
    float *outputs[] = {output};
    int rc = mnist_run(inputs, outputs, scratch);
    free(scratch);
    if (rc != 0) {
        fprintf(stderr, "mnist_run failed: %d\n", rc);
        return 1;
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(output, sizeof(float), MNIST_OUTPUT0_SIZE, f) != MNIST_OUTPUT0_SIZE) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    int best = 0;
    for (int i = 1; i < MNIST_OUTPUT0_SIZE; i++)
        if (output[i] > output[best]) best = i;
    printf("%s: class %d\n", MNIST_OUTPUT0_NAME, best);
    return 0;
}
