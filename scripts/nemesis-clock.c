// The nemesis's clock shim: an LD_PRELOAD library that shifts a process's wall clock.
//
// clock_gettime(CLOCK_REALTIME and CLOCK_REALTIME_COARSE), gettimeofday and time return the real
// time plus an offset in milliseconds, read from the file that STAMP_CLOCK_OFFSET_FILE names (one
// integer, negative to step back) and read again at most once a millisecond, so that a nemesis
// steps or skews a running process's clock by writing the file. The monotonic clocks are left
// alone. libfaketime cannot do this for Swift programs: under it they receive no command-line
// arguments. Built by scripts/nemesis with `cc -shared -fPIC -O2 -o nemesis-clock.so
// nemesis-clock.c -ldl`.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_function)(clockid_t, struct timespec *);

static _Atomic(clock_gettime_function) real_clock_gettime;
static _Atomic int64_t offset_milliseconds;
// When the offset file was read last, in nanoseconds of CLOCK_MONOTONIC; 0 before the first read.
static _Atomic int64_t offset_read_at;

static clock_gettime_function real(void) {
    clock_gettime_function function = atomic_load(&real_clock_gettime);
    if (function == NULL) {
        function = (clock_gettime_function)dlsym(RTLD_NEXT, "clock_gettime");
        atomic_store(&real_clock_gettime, function);
    }
    return function;
}

// The offset to add, from the file, read again when the last read is more than 1 ms old.
static int64_t offset(void) {
    struct timespec now;
    if (real()(CLOCK_MONOTONIC, &now) != 0) return atomic_load(&offset_milliseconds);
    int64_t now_nanoseconds = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    int64_t read_at = atomic_load(&offset_read_at);
    if (read_at != 0 && now_nanoseconds - read_at < 1000000) return atomic_load(&offset_milliseconds);
    atomic_store(&offset_read_at, now_nanoseconds);
    const char *path = getenv("STAMP_CLOCK_OFFSET_FILE");
    if (path == NULL) return 0;
    int file = open(path, O_RDONLY | O_CLOEXEC);
    if (file < 0) return atomic_load(&offset_milliseconds);
    char text[32];
    ssize_t length = read(file, text, sizeof text - 1);
    close(file);
    if (length > 0) {
        text[length] = 0;
        char *end;
        long long value = strtoll(text, &end, 10);
        if (end != text) atomic_store(&offset_milliseconds, (int64_t)value);
    }
    return atomic_load(&offset_milliseconds);
}

static void shift(struct timespec *time, int64_t milliseconds) {
    int64_t nanoseconds = (int64_t)time->tv_sec * 1000000000 + time->tv_nsec + milliseconds * 1000000;
    time->tv_sec = nanoseconds / 1000000000;
    time->tv_nsec = nanoseconds % 1000000000;
    if (time->tv_nsec < 0) {
        time->tv_nsec += 1000000000;
        time->tv_sec -= 1;
    }
}

int clock_gettime(clockid_t clock, struct timespec *time) {
    int result = real()(clock, time);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(time, offset());
    return result;
}

// glibc declares `value` non-null.
int gettimeofday(struct timeval *restrict value, void *restrict zone) {
    (void)zone;
    struct timespec now;
    int result = clock_gettime(CLOCK_REALTIME, &now);
    if (result == 0) {
        value->tv_sec = now.tv_sec;
        value->tv_usec = now.tv_nsec / 1000;
    }
    return result;
}

time_t time(time_t *value) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (value != NULL) *value = now.tv_sec;
    return now.tv_sec;
}
