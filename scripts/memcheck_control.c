/*
 * Positive control of scripts/memcheck.sh (never part of the extension): a library whose
 * constructor commits one undefined behaviour (UBSan reports it and goes on) and then one
 * heap overflow (ASan reports it and stops the process). The script LOADs it into one backend
 * of the sanitized cluster (dlopen runs the constructor before PostgreSQL looks for its magic
 * block) and checks that both reports reach the report directory: a clean run then means
 * "nothing reported", not "nothing could be".
 */
#include <stdio.h>
#include <stdlib.h>

static void memcheck_control(void) __attribute__((constructor));

static void memcheck_control(void)
{
    volatile int big = 0x7fffffff;
    volatile int sum = big + 1;     /* signed overflow: UBSan "runtime error:" */
    char *volatile p = malloc(8);

    fprintf(stderr, "memcheck control: %d\n", sum);
    p[8] = 1;                       /* one byte past the block: ASan heap-buffer-overflow */
    free(p);
}
