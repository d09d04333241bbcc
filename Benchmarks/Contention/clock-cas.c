// The floor under any generator that reads the realtime clock for each ID and keeps one shared
// position: threads that each read the clock and then advance one shared word, with a
// compare-and-exchange ("cas") or under a pthread mutex ("mutex"), for 2 seconds.
//
//   gcc -O2 -pthread Benchmarks/Contention/clock-cas.c -o /tmp/clock-cas
//   /tmp/clock-cas THREADS cas|mutex|cas-noclock
//
// See the README's "Speed" section for what it showed on the CI machine kind.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum mode { CAS, CAS_NO_CLOCK, MUTEX };

static _Atomic unsigned long word;
static unsigned long locked_word;
static long last_nanoseconds;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_int stop;
static enum mode mode;

static void *draw(void *result) {
    unsigned long count = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct timespec now;
        if (mode == MUTEX) {
            pthread_mutex_lock(&mutex);
            clock_gettime(CLOCK_REALTIME, &now);
            locked_word++;
            last_nanoseconds = now.tv_nsec;
            pthread_mutex_unlock(&mutex);
        } else {
            if (mode == CAS) clock_gettime(CLOCK_REALTIME, &now);
            unsigned long current = atomic_load_explicit(&word, memory_order_acquire);
            while (!atomic_compare_exchange_weak_explicit(&word, &current, current + 1, memory_order_acq_rel, memory_order_acquire)) {}
        }
        count++;
    }
    *(unsigned long *)result = count;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS cas|mutex|cas-noclock\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "THREADS must be 1 to 64\n");
        return 2;
    }
    mode = strcmp(argv[2], "mutex") == 0 ? MUTEX : strcmp(argv[2], "cas-noclock") == 0 ? CAS_NO_CLOCK : CAS;
    pthread_t ids[64];
    unsigned long counts[64];
    for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, draw, &counts[i]);
    struct timespec run = {2, 0};
    nanosleep(&run, NULL);
    atomic_store(&stop, 1);
    unsigned long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        total += counts[i];
    }
    printf("threads=%d mode=%s per_second=%.0f\n", threads, argv[2], total / 2.0);
    return 0;
}
