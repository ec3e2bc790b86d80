/*
 * corridor-delayline: the userspace delay line (a WAN link) as a compiled program.
 *
 * Stage: emulation (runs inside a link's "wire" network namespace).
 *
 * This is corridor/links/delayline.py in C, decision for decision: the same
 * options, the same fluid drop-tail shaper, the same frame parsing and GSO
 * splitting, the same event loop, control pipe and stats file. Read the Python
 * module for the why of each rule; comments here say why the C differs or why
 * something must stay exactly as it is. The Python process spends about 0.3
 * CPU-seconds per Gbit/s and its departures fall behind from about 5 Gbit/s on
 * two cores; this one does the same work with far less CPU per frame.
 *
 * Timing must match the Python shaper bit for bit on loss-free links: every
 * floating-point expression below is written in the order Python evaluates it
 * (x86-64 SSE2 doubles, no FMA without -march flags, so the results agree).
 * Only the random generator differs (xoshiro256** instead of Mersenne Twister),
 * so runs with loss or jitter match Python statistically, not frame for frame.
 *
 * Build:
 *   gcc -O2 -g -Wall -Wextra -Werror -std=gnu11 -o corridor-delayline \
 *       corridor/links/native/delayline.c -ljansson -lm -lpthread
 *
 * Two test modes need neither root nor interfaces:
 *   --shaper-trace  stdin lines "ARRIVAL_S SIZE[,SIZE...]" through the a_to_b
 *                   shaper; prints each segment's departure (%.9f) or "drop",
 *                   as Python's Shaper.release_times does.
 *   --fuzz-frames   stdin records (4-byte little-endian length, then vnet header
 *                   and frame) through the a_to_b direction's handle(); prints
 *                   one JSON line of counters.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

/* ------------------------------------------------------------------------- constants (as in delayline.py) */

#define ETH_HEADER_BYTES 14
/* Largest frame one recv can return: a 64 KB GSO frame plus headers, with room for BIG TCP. */
#define RECV_BUFFER_BYTES (262144 + 64)
#define SOCKET_BUFFER_BYTES (64 * 1024 * 1024)
#define STATS_INTERVAL_S 0.2
/* A super-frame whose serialisation takes longer than this is released segment by segment. */
#define SPLIT_SERIALISATION_S 0.002
/* Kernel arrival stamps further back than this are not trusted (see direction_receive). */
#define MAX_RX_LAG_S 1.0
/* Departures this close to now are sent at once rather than armed on the timer. */
#define TIMER_GRANULARITY_S 20e-6
/* A refused send whose frame is already due is retried this much later. */
#define RETRY_S 50e-6
#define RECEIVE_BATCH 8
#define MAX_RECEIVE_ROUNDS 256
#define LATE_FINE_BIN_US 10
#define LATE_COARSE_BIN_US 1000
#define LATE_BINS 1000

#define VNET_HDR_BYTES 10
#define VNET_F_NEEDS_CSUM 1
#define GSO_NONE 0
#define GSO_TCPV4 1
#define GSO_UDP 3
#define GSO_TCPV6 4
#define GSO_UDP_L4 5
#define GSO_ECN 0x80
#define IPPROTO_TCP_NUM 6
#define IPPROTO_UDP_NUM 17

#define MAX_GSO_SEGMENTS 2048
#define MAX_SEGMENT_IP_BYTES 65535
#define TCP_CSUM_OFFSET 16

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define REALTIME_PRIORITY 20
#define FIFO_LEAVE_SHARE 0.85
#define FIFO_RETURN_SHARE 0.60
#define CPU_WINDOW_S 0.4
#define BUSY_NICE (-10)

#define CONTROL_LOG 64
#define MAX_COMMAND_BYTES 4096

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_BAD_ARGS 2

static const char *const STATE_KEYS[] = {"down", "delay_ms", "extra_delay_ms", "rate_mbps", "loss"};
#define STATE_KEY_COUNT 5

/* ------------------------------------------------------------------------- time */

/* time.monotonic() and time.time(): nanoseconds as a double divided by 1e9, exactly as CPython converts. */
static double clock_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    return (double)ns / 1e9;
}

static double mono_s(void) { return clock_s(CLOCK_MONOTONIC); }
static double unix_s(void) { return clock_s(CLOCK_REALTIME); }

/* ------------------------------------------------------------------------- logging */

enum { LOG_DEBUG = 10, LOG_INFO = 20, LOG_WARNING = 30, LOG_ERROR = 40, LOG_CRITICAL = 50 };
static int log_threshold = LOG_INFO;

static const char *level_name(int level)
{
    switch (level) {
    case LOG_DEBUG: return "DEBUG";
    case LOG_INFO: return "INFO";
    case LOG_WARNING: return "WARNING";
    case LOG_ERROR: return "ERROR";
    default: return "CRITICAL";
    }
}

/* "YYYY-MM-DD HH:MM:SS,mmm delayline LEVEL: message", Python logging's format, written in one write(). */
__attribute__((format(printf, 2, 3))) static void log_msg(int level, const char *fmt, ...)
{
    if (level < log_threshold)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char line[8192];
    size_t n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ",%03ld delayline %s: ", ts.tv_nsec / 1000000L,
                          level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2;
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, n);
    (void)ignored;
}

#define LOG_ENABLED(level) ((level) >= log_threshold)

/* ------------------------------------------------------------------------- growable strings */

struct sbuf {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed: the contents are incomplete */
};

static bool sb_reserve(struct sbuf *sb, size_t extra)
{
    if (sb->failed)
        return false;
    if (sb->len + extra + 1 <= sb->cap)
        return true;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    char *grown = realloc(sb->data, cap);
    if (!grown) {
        sb->failed = true;
        return false;
    }
    sb->data = grown;
    sb->cap = cap;
    return true;
}

static void sb_add(struct sbuf *sb, const char *text, size_t len)
{
    if (!sb_reserve(sb, len))
        return;
    memcpy(sb->data + sb->len, text, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

static void sb_puts(struct sbuf *sb, const char *text) { sb_add(sb, text, strlen(text)); }

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *sb, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        sb_add(sb, small, (size_t)n);
        return;
    }
    if (!sb_reserve(sb, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

static void sb_free(struct sbuf *sb)
{
    free(sb->data);
    memset(sb, 0, sizeof *sb);
}

/* ------------------------------------------------------------------------- Python-style text of values */

/*
 * repr(float) as Python writes it: the shortest digits that read back to the
 * same double, positional between 1e-4 and 1e16, else d.ddde+XX. JSON numbers
 * use it too, so a float stays a float for a Python reader ("0.0", never "0").
 */
static void format_float(double value, char *out, size_t size)
{
    if (isnan(value)) {
        snprintf(out, size, "nan");
        return;
    }
    if (isinf(value)) {
        snprintf(out, size, value > 0 ? "inf" : "-inf");
        return;
    }
    char sci[40];
    int precision = 1;
    for (; precision <= 17; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision - 1, value);
        if (strtod(sci, NULL) == value)
            break;
    }
    /* sci is "[-]d[.ddd]e[+-]XX": pull out the digits and the exponent. */
    const char *p = sci;
    bool negative = false;
    if (*p == '-') {
        negative = true;
        p++;
    }
    char digits[24];
    int ndigits = 0;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[ndigits++] = *p;
    digits[ndigits] = '\0';
    int exponent = *p == 'e' ? atoi(p + 1) : 0;
    while (ndigits > 1 && digits[ndigits - 1] == '0')
        digits[--ndigits] = '\0';
    char body[64];
    size_t n = 0;
    if (exponent >= -4 && exponent < 16) {
        if (exponent >= 0) {
            for (int i = 0; i <= exponent; i++)
                body[n++] = i < ndigits ? digits[i] : '0';
            body[n++] = '.';
            if (ndigits > exponent + 1)
                for (int i = exponent + 1; i < ndigits; i++)
                    body[n++] = digits[i];
            else
                body[n++] = '0';
        } else {
            body[n++] = '0';
            body[n++] = '.';
            for (int i = 0; i < -exponent - 1; i++)
                body[n++] = '0';
            for (int i = 0; i < ndigits; i++)
                body[n++] = digits[i];
        }
        body[n] = '\0';
    } else {
        body[n++] = digits[0];
        if (ndigits > 1) {
            body[n++] = '.';
            for (int i = 1; i < ndigits; i++)
                body[n++] = digits[i];
        }
        body[n] = '\0';
        snprintf(body + n, sizeof body - n, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
    }
    snprintf(out, size, "%s%s", negative ? "-" : "", body);
}

/* A float as a JSON number: never NaN or Infinity (0.0 instead, what Python reports for "nothing yet"). */
static void sb_float(struct sbuf *sb, double value)
{
    char text[48];
    format_float(isfinite(value) ? value : 0.0, text, sizeof text);
    sb_puts(sb, text);
}

static void sb_json_string(struct sbuf *sb, const char *text)
{
    sb_add(sb, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sb_add(sb, esc, 2);
        } else if (*p < 0x20) {
            sb_printf(sb, "\\u%04x", *p);
        } else {
            sb_add(sb, (const char *)p, 1);
        }
    }
    sb_add(sb, "\"", 1);
}

/* repr() of a str: single quotes unless the text holds ' and no ". */
static void sb_py_str(struct sbuf *sb, const char *text)
{
    char quote = strchr(text, '\'') && !strchr(text, '"') ? '"' : '\'';
    sb_add(sb, &quote, 1);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '\\')
            sb_puts(sb, "\\\\");
        else if (*p == (unsigned char)quote)
            sb_printf(sb, "\\%c", quote);
        else if (*p == '\n')
            sb_puts(sb, "\\n");
        else if (*p == '\r')
            sb_puts(sb, "\\r");
        else if (*p == '\t')
            sb_puts(sb, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            sb_printf(sb, "\\x%02x", *p);
        else
            sb_add(sb, (const char *)p, 1);
    }
    sb_add(sb, &quote, 1);
}

/* repr() of the Python value json.loads would have made of ``value`` (for error and log messages). */
static void sb_py_repr(struct sbuf *sb, const json_t *value)
{
    char text[48];
    switch (json_typeof(value)) {
    case JSON_NULL: sb_puts(sb, "None"); break;
    case JSON_TRUE: sb_puts(sb, "True"); break;
    case JSON_FALSE: sb_puts(sb, "False"); break;
    case JSON_INTEGER: sb_printf(sb, "%" JSON_INTEGER_FORMAT, json_integer_value(value)); break;
    case JSON_REAL:
        format_float(json_real_value(value), text, sizeof text);
        sb_puts(sb, text);
        break;
    case JSON_STRING: sb_py_str(sb, json_string_value(value)); break;
    case JSON_ARRAY: {
        sb_puts(sb, "[");
        size_t index;
        json_t *item;
        json_array_foreach(value, index, item) {
            if (index)
                sb_puts(sb, ", ");
            sb_py_repr(sb, item);
        }
        sb_puts(sb, "]");
        break;
    }
    case JSON_OBJECT: {
        sb_puts(sb, "{");
        const char *key;
        json_t *item;
        bool first = true;
        json_object_foreach((json_t *)value, key, item) {
            if (!first)
                sb_puts(sb, ", ");
            first = false;
            sb_py_str(sb, key);
            sb_puts(sb, ": ");
            sb_py_repr(sb, item);
        }
        sb_puts(sb, "}");
        break;
    }
    }
}

/* str(OSError): "[Errno N] message". */
static void os_error_text(int err, const char *what, char *out, size_t size)
{
    snprintf(out, size, "[Errno %d] %s", err, what ? what : strerror(err));
}

/* ------------------------------------------------------------------------- random numbers */

/*
 * xoshiro256** seeded through splitmix64: Python's Mersenne Twister is not worth
 * reproducing, only the draw order is (see shaper_lose and shaper_departure).
 */
struct rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *rng, uint64_t seed)
{
    uint64_t state = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&state);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* A double uniform in [0, 1) with 53 random bits, like random.random(). */
static double rng_random(struct rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

/* random.uniform(a, b): a + (b - a) * random(). */
static double rng_uniform(struct rng *rng, double a, double b) { return a + (b - a) * rng_random(rng); }

/* ------------------------------------------------------------------------- configuration */

/* One direction's parameters in SI units (DirectionConfig). */
struct dir_config {
    double rate_bps;
    double delay_s;
    long long queue_bytes;
    double jitter_s;
    double loss;
    bool has_queue_packets;
    long long queue_packets;
    bool reorder;
    bool has_burst;
    double p_good_to_bad, p_bad_to_good, loss_good, loss_bad;
};

/* Python's truthiness of a JSON value (bool(x) after json.loads). */
static bool json_truthy(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_NULL:
    case JSON_FALSE: return false;
    case JSON_TRUE: return true;
    case JSON_INTEGER: return json_integer_value(value) != 0;
    case JSON_REAL: return json_real_value(value) != 0.0;
    case JSON_STRING: return json_string_length(value) != 0;
    case JSON_ARRAY: return json_array_size(value) != 0;
    case JSON_OBJECT: return json_object_size(value) != 0;
    }
    return false;
}

static const char *py_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_NULL: return "NoneType";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_STRING: return "str";
    case JSON_ARRAY: return "list";
    case JSON_OBJECT: return "dict";
    }
    return "object";
}

/* float(value) as Python would take it; false with Python's message in ``why``. */
static bool py_float(const json_t *value, double *out, char *why, size_t why_len)
{
    switch (json_typeof(value)) {
    case JSON_TRUE: *out = 1.0; return true;
    case JSON_FALSE: *out = 0.0; return true;
    case JSON_INTEGER: *out = (double)json_integer_value(value); return true;
    case JSON_REAL: *out = json_real_value(value); return true;
    case JSON_STRING: {
        const char *text = json_string_value(value);
        char *end;
        errno = 0;
        double parsed = strtod(text, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
            end++;
        if (end != text && *end == '\0' && strlen(text) == json_string_length(value) &&
            !(text[0] == '0' && (text[1] == 'x' || text[1] == 'X'))) {
            *out = parsed;
            return true;
        }
        snprintf(why, why_len, "could not convert string to float: '%s'", text);
        return false;
    }
    default:
        snprintf(why, why_len, "float() argument must be a string or a real number, not '%s'",
                 py_type_name(value));
        return false;
    }
}

/* int(value) as Python would take it (a float is cut toward zero). */
static bool py_int(const json_t *value, long long *out, char *why, size_t why_len)
{
    switch (json_typeof(value)) {
    case JSON_TRUE: *out = 1; return true;
    case JSON_FALSE: *out = 0; return true;
    case JSON_INTEGER: *out = json_integer_value(value); return true;
    case JSON_REAL: {
        double real = json_real_value(value);
        if (!isfinite(real) || fabs(real) >= 9.2e18) {
            snprintf(why, why_len, "cannot convert float %g to integer", real);
            return false;
        }
        *out = (long long)real;
        return true;
    }
    case JSON_STRING: {
        const char *text = json_string_value(value);
        char *end;
        errno = 0;
        long long parsed = strtoll(text, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
            end++;
        if (end != text && *end == '\0' && errno == 0) {
            *out = parsed;
            return true;
        }
        snprintf(why, why_len, "invalid literal for int() with base 10: '%s'", text);
        return false;
    }
    default:
        snprintf(why, why_len, "int() argument must be a string, a bytes-like object or a real number, not '%s'",
                 py_type_name(value));
        return false;
    }
}

/* A required key: Python's KeyError prints as the quoted key. */
static const json_t *required(const json_t *data, const char *key, char *why, size_t why_len)
{
    const json_t *value = json_object_get(data, key);
    if (!value)
        snprintf(why, why_len, "'%s'", key);
    return value;
}

/* DirectionConfig.from_dict: the same keys, defaults and conversions; unknown keys are ignored like there. */
static bool config_from_json(const char *text, struct dir_config *cfg, char *why, size_t why_len)
{
    json_error_t error;
    json_t *data = json_loads(text, JSON_DECODE_ANY, &error);
    if (!data) {
        snprintf(why, why_len, "%s: line %d column %d", error.text, error.line, error.column);
        return false;
    }
    bool ok = false;
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(data)) {
        snprintf(why, why_len, "'%s' object has no attribute 'get'", py_type_name(data));
        goto done;
    }
    const json_t *ge = json_object_get(data, "burst_loss");
    if (ge && json_truthy(ge)) {
        if (!json_is_object(ge)) {
            snprintf(why, why_len, "burst_loss must be an object, got '%s'", py_type_name(ge));
            goto done;
        }
        const json_t *v;
        if (!(v = required(ge, "p_good_to_bad", why, why_len)) || !py_float(v, &cfg->p_good_to_bad, why, why_len))
            goto done;
        if (!(v = required(ge, "p_bad_to_good", why, why_len)) || !py_float(v, &cfg->p_bad_to_good, why, why_len))
            goto done;
        cfg->loss_good = 0.0;
        cfg->loss_bad = 1.0;
        if ((v = json_object_get(ge, "loss_good")) && !py_float(v, &cfg->loss_good, why, why_len))
            goto done;
        if ((v = json_object_get(ge, "loss_bad")) && !py_float(v, &cfg->loss_bad, why, why_len))
            goto done;
        cfg->has_burst = true;
    }
    const json_t *packets = json_object_get(data, "queue_packets");
    const json_t *v;
    double number;
    if (!(v = required(data, "rate_mbps", why, why_len)) || !py_float(v, &number, why, why_len))
        goto done;
    cfg->rate_bps = number * 1e6;
    if (!(v = required(data, "delay_ms", why, why_len)) || !py_float(v, &number, why, why_len))
        goto done;
    cfg->delay_s = number / 1e3;
    if (!(v = required(data, "queue_bytes", why, why_len)) || !py_int(v, &cfg->queue_bytes, why, why_len))
        goto done;
    number = 0.0;
    if ((v = json_object_get(data, "jitter_ms")) && !py_float(v, &number, why, why_len))
        goto done;
    cfg->jitter_s = number / 1e3;
    cfg->loss = 0.0;
    if ((v = json_object_get(data, "loss")) && !py_float(v, &cfg->loss, why, why_len))
        goto done;
    if (packets && !json_is_null(packets)) {
        if (!py_int(packets, &cfg->queue_packets, why, why_len))
            goto done;
        cfg->has_queue_packets = true;
    }
    v = json_object_get(data, "reorder");
    cfg->reorder = v ? json_truthy(v) : false;
    /* Python would take a zero rate and die of ZeroDivisionError at the first frame: refuse it up front. */
    if (!(cfg->rate_bps > 0) || isinf(cfg->rate_bps)) {
        char shown[48];
        format_float(cfg->rate_bps / 1e6, shown, sizeof shown);
        snprintf(why, why_len, "rate_mbps must be a finite number above zero, got %s", shown);
        goto done;
    }
    ok = true;
done:
    json_decref(data);
    return ok;
}

/* ------------------------------------------------------------------------- the shaper (pure) */

/* Finish times of segments in the queue, kept only for packet-count limits: a growable ring. */
struct time_ring {
    double *items;
    size_t head, len, cap;
};

static bool ring_push(struct time_ring *ring, double value)
{
    if (ring->len == ring->cap) {
        size_t cap = ring->cap ? ring->cap * 2 : 64;
        double *grown = malloc(cap * sizeof *grown);
        if (!grown)
            return false;
        for (size_t i = 0; i < ring->len; i++)
            grown[i] = ring->items[(ring->head + i) % ring->cap];
        free(ring->items);
        ring->items = grown;
        ring->head = 0;
        ring->cap = cap;
    }
    ring->items[(ring->head + ring->len) % ring->cap] = value;
    ring->len++;
    return true;
}

struct shaper {
    struct dir_config config;
    struct rng rng;
    double tx_free_s;
    double last_departure_s;
    bool ge_bad;
    struct time_ring in_queue;
    double queue_bytes_max;
    double queue_delay_max_s;
    double queue_delay_sum_s;
    long long admitted;
    long long drops_queue;
    long long drops_loss;
    long long drops_down;
    bool down;
    bool plain_loss;
};

static void shaper_init(struct shaper *shaper, const struct dir_config *config, uint64_t seed)
{
    memset(shaper, 0, sizeof *shaper);
    shaper->config = *config;
    rng_seed(&shaper->rng, seed);
    shaper->plain_loss = config->loss > 0 || config->has_burst;
}

static void shaper_reconfigure(struct shaper *shaper, const struct dir_config *config, bool down)
{
    shaper->config = *config;
    shaper->down = down;
    shaper->plain_loss = config->loss > 0 || config->has_burst;
}

static double shaper_backlog_bytes(const struct shaper *shaper, double now_s)
{
    double waiting = shaper->tx_free_s - now_s;
    return (waiting > 0.0 ? waiting : 0.0) * shaper->config.rate_bps / 8;
}

/* Shaper._admit: the finish time of a segment, or NAN when drop-tail refuses it. */
static double shaper_admit(struct shaper *shaper, double now_s, long long size_bytes)
{
    const struct dir_config *cfg = &shaper->config;
    double start = shaper->tx_free_s > now_s ? shaper->tx_free_s : now_s;
    double backlog = (start - now_s) * cfg->rate_bps / 8;
    if (backlog + (double)size_bytes > (double)cfg->queue_bytes + 0.5) { /* half a byte absorbs float rounding */
        shaper->drops_queue++;
        return NAN;
    }
    if (cfg->has_queue_packets) {
        struct time_ring *queue = &shaper->in_queue;
        while (queue->len && queue->items[queue->head] <= now_s) {
            queue->head = (queue->head + 1) % queue->cap;
            queue->len--;
        }
        if ((long long)queue->len >= cfg->queue_packets) {
            shaper->drops_queue++;
            return NAN;
        }
    }
    double finish = start + (double)(size_bytes * 8) / cfg->rate_bps;
    if (cfg->has_queue_packets && !ring_push(&shaper->in_queue, finish)) {
        /* No memory to remember it: refusing the segment keeps the packet limit honest. */
        shaper->drops_queue++;
        return NAN;
    }
    shaper->tx_free_s = finish;
    double waited = start - now_s;
    shaper->admitted++;
    shaper->queue_delay_sum_s += waited;
    if (waited > shaper->queue_delay_max_s)
        shaper->queue_delay_max_s = waited;
    if (backlog + (double)size_bytes > shaper->queue_bytes_max)
        shaper->queue_bytes_max = backlog + (double)size_bytes;
    return finish;
}

/* One per-segment loss decision: uniform, then Gilbert-Elliott, in Python's draw order. */
static bool shaper_lose(struct shaper *shaper)
{
    const struct dir_config *cfg = &shaper->config;
    bool lost = cfg->loss > 0 && rng_random(&shaper->rng) < cfg->loss;
    if (cfg->has_burst) {
        double state_loss = shaper->ge_bad ? cfg->loss_bad : cfg->loss_good;
        if (state_loss > 0 && rng_random(&shaper->rng) < state_loss)
            lost = true;
        if (shaper->ge_bad) {
            if (rng_random(&shaper->rng) < cfg->p_bad_to_good)
                shaper->ge_bad = false;
        } else if (rng_random(&shaper->rng) < cfg->p_good_to_bad) {
            shaper->ge_bad = true;
        }
    }
    if (lost)
        shaper->drops_loss++;
    return lost;
}

/* Shaper.offer_one: finish time of a one-segment frame, NAN when dropped. */
static double shaper_offer_one(struct shaper *shaper, double now_s, long long size_bytes)
{
    if (shaper->down) {
        shaper->drops_down++;
        return NAN;
    }
    double finish = shaper_admit(shaper, now_s, size_bytes);
    if (!isnan(finish) && shaper->plain_loss && shaper_lose(shaper))
        return NAN;
    return finish;
}

/*
 * Shaper.offer_whole: admit all ``count`` segments of a super-frame in one step
 * (all of ``first`` bytes but the last, of ``last``), or NAN having changed
 * nothing when the outcome could differ from offer()'s. The arithmetic is
 * Python's, not offer()'s, so the finish time is the one Python computes.
 */
static double shaper_offer_whole(struct shaper *shaper, double now_s, long long first, long long last, long long count,
                                 long long total_bytes)
{
    const struct dir_config *cfg = &shaper->config;
    if (shaper->down || shaper->plain_loss || cfg->has_queue_packets || count < 2)
        return NAN;
    double start = shaper->tx_free_s > now_s ? shaper->tx_free_s : now_s;
    double backlog = (start - now_s) * cfg->rate_bps / 8;
    if (backlog + (double)total_bytes > (double)cfg->queue_bytes + 0.5)
        return NAN;
    double seconds_per_byte = 8 / cfg->rate_bps;
    double finish = start + (double)total_bytes * seconds_per_byte;
    shaper->tx_free_s = finish;
    double waited = start - now_s;
    /* Segment k waits for the k full segments ahead of it: sum over k of k x first bytes. */
    shaper->admitted += count;
    shaper->queue_delay_sum_s +=
        (double)count * waited + (double)(first * (count - 1) * count) / 2 * seconds_per_byte;
    double last_waited = waited + (double)(total_bytes - last) * seconds_per_byte;
    if (last_waited > shaper->queue_delay_max_s)
        shaper->queue_delay_max_s = last_waited;
    if (backlog + (double)total_bytes > shaper->queue_bytes_max)
        shaper->queue_bytes_max = backlog + (double)total_bytes;
    return finish;
}

/* Shaper.departure: when a segment that finished serialising at ``finish_s`` leaves the wire. */
static double shaper_departure(struct shaper *shaper, double finish_s)
{
    const struct dir_config *cfg = &shaper->config;
    double depart = finish_s + cfg->delay_s;
    if (cfg->jitter_s > 0)
        depart += rng_uniform(&shaper->rng, -cfg->jitter_s, cfg->jitter_s);
    if (cfg->reorder)
        return depart;
    if (depart < shaper->last_departure_s)
        depart = shaper->last_departure_s;
    shaper->last_departure_s = depart;
    return depart;
}

/* Shaper.offer: each segment's finish time, NAN where the queue or loss took it. */
static void shaper_offer(struct shaper *shaper, double now_s, const long long *sizes, size_t count, double *finishes)
{
    if (shaper->down) {
        shaper->drops_down += (long long)count;
        for (size_t i = 0; i < count; i++)
            finishes[i] = NAN;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        double finish = shaper_admit(shaper, now_s, sizes[i]);
        if (!isnan(finish) && shaper->plain_loss && shaper_lose(shaper))
            finish = NAN;
        finishes[i] = finish;
    }
}

static void shaper_free(struct shaper *shaper)
{
    free(shaper->in_queue.items);
    shaper->in_queue.items = NULL;
}

/* ------------------------------------------------------------------------- pure frame helpers */

/* What the shaper needs to know about a frame: ``count`` segments, all of seg_bytes but the last. */
struct frame_info {
    long long count;
    long long seg_bytes, last_bytes;
    size_t l4_offset, header_bytes;
    unsigned gso_size, gso_type;
};

struct vnet {
    unsigned flags, gso_type, hdr_len, gso_size, csum_start, csum_offset;
};

static inline unsigned le16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static inline unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put_be16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Offset of the IP header: 14, or 18 behind one VLAN tag. */
static size_t l3_offset(const uint8_t *frame, size_t size)
{
    if (size >= 18 && frame[12] == 0x81 && frame[13] == 0x00)
        return ETH_HEADER_BYTES + 4;
    return ETH_HEADER_BYTES;
}

static void single_segment(struct frame_info *info, long long ip_bytes)
{
    info->count = 1;
    info->seg_bytes = info->last_bytes = ip_bytes;
}

/* _checked_l4_offset: the L4 header of a GSO frame, checked against its IP header; 0 with ``why`` when malformed. */
static size_t checked_l4_offset(const uint8_t *frame, size_t size, size_t l3, unsigned base, bool has_start,
                                size_t csum_start, char *why, size_t why_len)
{
    size_t l4;
    if (size < l3 + 20) {
        snprintf(why, why_len, "IP header truncated");
        return 0;
    }
    unsigned version = frame[l3] >> 4;
    if (version == 4) {
        if (base == GSO_TCPV6) {
            snprintf(why, why_len, "IPv6 TCP GSO frame carries an IPv4 packet");
            return 0;
        }
        unsigned ihl = frame[l3] & 0x0F;
        if (ihl < 5) {
            snprintf(why, why_len, "IPv4 header length %u is below 5", ihl);
            return 0;
        }
        l4 = l3 + ihl * 4;
        if (has_start && csum_start != l4) {
            snprintf(why, why_len, "csum_start %zu is not the L4 header at %zu", csum_start, l4);
            return 0;
        }
        unsigned protocol = frame[l3 + 9];
        if (protocol != (base == GSO_TCPV4 ? IPPROTO_TCP_NUM : IPPROTO_UDP_NUM)) {
            snprintf(why, why_len, "GSO type %u frame carries IP protocol %u", base, protocol);
            return 0;
        }
    } else if (version == 6) {
        if (base == GSO_TCPV4) {
            snprintf(why, why_len, "IPv4 TCP GSO frame carries an IPv6 packet");
            return 0;
        }
        if (size < l3 + 40) {
            snprintf(why, why_len, "IPv6 header truncated");
            return 0;
        }
        l4 = l3 + 40;
        if (has_start) {
            /* Extension headers sit between the fixed header and L4, in multiples of 8 bytes. */
            if (csum_start < l4 || (csum_start - l4) % 8) {
                snprintf(why, why_len, "csum_start %zu is not an L4 header behind IPv6", csum_start);
                return 0;
            }
            l4 = csum_start;
        }
    } else {
        snprintf(why, why_len, "GSO frame with IP version %u", version);
        return 0;
    }
    if (l4 > size) {
        snprintf(why, why_len, "L4 header lies past the frame");
        return 0;
    }
    return l4;
}

/*
 * frame_info: the segment sizes a frame stands for, from its virtio-net header;
 * false (with the reason in ``why``) for every case Python raises MalformedFrame.
 */
static bool frame_info(const uint8_t *frame, size_t size, const struct vnet *vnet, struct frame_info *info, char *why,
                       size_t why_len)
{
    size_t l3 = l3_offset(frame, size);
    long long ip_bytes = (long long)size - (long long)l3;
    if (ip_bytes < 1)
        ip_bytes = 1;
    memset(info, 0, sizeof *info);
    bool needs_csum = vnet->flags & VNET_F_NEEDS_CSUM;
    if (needs_csum && (size_t)vnet->csum_start + vnet->csum_offset + 2 > size) {
        snprintf(why, why_len, "checksum at %u+%u lies past the frame's %zu bytes", vnet->csum_start,
                 vnet->csum_offset, size);
        return false;
    }
    unsigned base = vnet->gso_type & ~(unsigned)GSO_ECN;
    if (base == GSO_NONE) {
        single_segment(info, ip_bytes);
        return true;
    }
    if (base != GSO_TCPV4 && base != GSO_TCPV6 && base != GSO_UDP && base != GSO_UDP_L4) {
        snprintf(why, why_len, "unknown GSO type %u", vnet->gso_type);
        return false;
    }
    if (vnet->gso_size == 0) {
        snprintf(why, why_len, "GSO frame with segment size 0");
        return false;
    }
    size_t l4 = checked_l4_offset(frame, size, l3, base, needs_csum, vnet->csum_start, why, why_len);
    if (!l4)
        return false;
    size_t header;
    if (base == GSO_TCPV4 || base == GSO_TCPV6) {
        if (needs_csum && vnet->csum_offset != TCP_CSUM_OFFSET) {
            snprintf(why, why_len, "TCP GSO frame with checksum offset %u, not %d", vnet->csum_offset,
                     TCP_CSUM_OFFSET);
            return false;
        }
        if (l4 + 20 > size) {
            snprintf(why, why_len, "TCP header truncated");
            return false;
        }
        unsigned data_offset = frame[l4 + 12] >> 4;
        if (data_offset < 5) {
            snprintf(why, why_len, "TCP data offset %u is below 5", data_offset);
            return false;
        }
        header = l4 + data_offset * 4;
    } else {
        header = l4 + 8;
    }
    if (header > size) {
        snprintf(why, why_len, "headers end at byte %zu, past the frame's %zu bytes", header, size);
        return false;
    }
    long long payload = (long long)(size - header);
    long long gso = vnet->gso_size;
    long long head_ip = (long long)(header - l3);
    if (head_ip + (gso < payload ? gso : payload) > MAX_SEGMENT_IP_BYTES) {
        snprintf(why, why_len, "segments of %lld IP bytes cannot exist", head_ip + gso);
        return false;
    }
    info->l4_offset = l4;
    info->header_bytes = header;
    info->gso_size = vnet->gso_size;
    info->gso_type = vnet->gso_type;
    if (payload <= gso) {
        single_segment(info, ip_bytes);
        return true;
    }
    long long full = payload / gso, rest = payload % gso;
    long long count = full + (rest ? 1 : 0);
    if (count > MAX_GSO_SEGMENTS) {
        snprintf(why, why_len, "GSO frame would be %lld segments of %lld bytes", count, gso);
        return false;
    }
    info->count = count;
    info->seg_bytes = head_ip + gso;
    info->last_bytes = rest ? head_ip + rest : info->seg_bytes;
    return true;
}

static uint64_t csum_add(uint64_t total, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i + 1 < len; i += 2)
        total += be16(data + i);
    if (len % 2)
        total += (uint64_t)data[len - 1] << 8;
    return total;
}

static unsigned csum_fold(uint64_t total)
{
    while (total >> 16)
        total = (total & 0xFFFF) + (total >> 16);
    return (unsigned)total;
}

/* ------------------------------------------------------------------------- frames in flight */

/* One frame waiting for its departure: vnet header and Ethernet frame in ``data``. */
struct frame {
    struct frame *next;
    double depart, arrival;
    uint64_t seq;
    long long segments;
    long long ip_bytes;
    size_t len;
    uint8_t data[];
};

static struct frame *frame_alloc(size_t len)
{
    struct frame *frame = malloc(sizeof *frame + len);
    if (frame) {
        frame->next = NULL;
        frame->len = len;
    }
    return frame;
}

/*
 * split_tcp_gso: the kept segments of a TCP GSO frame, each a frame of its own
 * with a vnet header asking the kernel to finish its checksum. Segment fields
 * are set as the kernel's own segmentation would (sequence, IP length, IPv4 id
 * and header checksum, CWR only on the first, FIN/PSH only on the last). Returns
 * false when memory runs out (what was built is freed).
 */
static bool split_tcp_gso(const uint8_t *frame, size_t size, const struct frame_info *info, const bool *keep,
                          struct frame **out)
{
    size_t l3 = l3_offset(frame, size);
    size_t l4 = info->l4_offset, header = info->header_bytes;
    size_t mss = info->gso_size;
    const uint8_t *payload = frame + header;
    size_t payload_len = size - header;
    size_t count = (size_t)info->count;
    bool is_v4 = frame[l3] >> 4 == 4;
    uint32_t seq0 = be32(frame + l4 + 4);
    uint8_t flags0 = frame[l4 + 13];
    unsigned ip_id0 = is_v4 ? be16(frame + l3 + 4) : 0;
    uint64_t pseudo = is_v4 ? csum_add(0, frame + l3 + 12, 8) + 6 : csum_add(0, frame + l3 + 8, 32) + 6;
    size_t made = 0;
    for (size_t index = 0; index < count; index++) {
        if (!keep[index])
            continue;
        size_t from = index * mss;
        size_t data_len = payload_len - from < mss ? payload_len - from : mss;
        struct frame *seg_frame = frame_alloc(VNET_HDR_BYTES + header + data_len);
        if (!seg_frame) {
            for (size_t i = 0; i < made; i++)
                free(out[i]);
            return false;
        }
        uint8_t *vnet = seg_frame->data;
        memset(vnet, 0, VNET_HDR_BYTES);
        vnet[0] = VNET_F_NEEDS_CSUM;
        vnet[1] = GSO_NONE;
        vnet[6] = (uint8_t)l4;
        vnet[7] = (uint8_t)(l4 >> 8);
        vnet[8] = TCP_CSUM_OFFSET;
        uint8_t *seg = vnet + VNET_HDR_BYTES;
        memcpy(seg, frame, header);
        memcpy(seg + header, payload + from, data_len);
        size_t l4_bytes = header - l4 + data_len;
        put_be32(seg + l4 + 4, seq0 + (uint32_t)(index * mss));
        uint8_t flags = flags0;
        if (index > 0)
            flags &= (uint8_t)~0x80;
        if (index < count - 1)
            flags &= (uint8_t)~0x09;
        seg[l4 + 13] = flags;
        if (is_v4) {
            put_be16(seg + l3 + 2, (unsigned)(l4 - l3 + l4_bytes));
            put_be16(seg + l3 + 4, (ip_id0 + (unsigned)index) & 0xFFFF);
            put_be16(seg + l3 + 10, 0);
            put_be16(seg + l3 + 10, ~csum_fold(csum_add(0, seg + l3, l4 - l3)) & 0xFFFF);
        } else {
            put_be16(seg + l3 + 4, (unsigned)(l4 - l3 - 40 + l4_bytes));
        }
        put_be16(seg + l4 + 16, csum_fold(pseudo + l4_bytes) & 0xFFFF);
        out[made++] = seg_frame;
    }
    return true;
}

/* ------------------------------------------------------------------------- statistics */

struct histogram {
    long long fine[LATE_BINS];
    long long coarse[LATE_BINS];
};

/* _histogram_add: 10 us bins up to 10 ms, then 1 ms bins (the last holds the rest). */
static void histogram_add(struct histogram *hist, double value_s)
{
    double fine = value_s * 1e6 / LATE_FINE_BIN_US;
    if (fine < LATE_BINS) {
        hist->fine[fine > 0 ? (int)fine : 0]++;
        return;
    }
    double coarse = value_s * 1e6 / LATE_COARSE_BIN_US;
    hist->coarse[coarse < LATE_BINS ? (int)coarse : LATE_BINS - 1]++;
}

/* _histogram_percentile_us: upper edge of the bin holding the given fraction of ``count`` values. */
static double histogram_percentile_us(const struct histogram *hist, long long count, double fraction)
{
    if (count == 0)
        return 0.0;
    double target = fraction * (double)count;
    long long seen = 0;
    for (int i = 0; i < LATE_BINS; i++) {
        seen += hist->fine[i];
        if ((double)seen >= target)
            return (double)((i + 1) * LATE_FINE_BIN_US);
    }
    for (int i = 0; i < LATE_BINS; i++) {
        seen += hist->coarse[i];
        if ((double)seen >= target)
            return (double)((i + 1) * LATE_COARSE_BIN_US);
    }
    return (double)(LATE_BINS * LATE_COARSE_BIN_US);
}

struct dir_stats {
    long long frames_in, packets, bytes, drops_tx, malformed;
    double late_sum_s, late_max_s;
    long long late_count;
    struct histogram late;
    double delay_sum_s, delay_max_s, delay_min_s;
    double rx_lag_max_s, send_max_s;
};

static void record_send(struct dir_stats *stats, double late_s, double delay_s, long long segments,
                        long long ip_bytes)
{
    stats->packets += segments;
    stats->bytes += ip_bytes;
    stats->late_count++;
    stats->late_sum_s += late_s;
    if (late_s > stats->late_max_s)
        stats->late_max_s = late_s;
    histogram_add(&stats->late, late_s);
    stats->delay_sum_s += delay_s;
    if (delay_s > stats->delay_max_s)
        stats->delay_max_s = delay_s;
    if (delay_s < stats->delay_min_s)
        stats->delay_min_s = delay_s;
}

struct loop_stats {
    long long wakes;
    double wake_late_sum_s, wake_late_max_s;
    struct histogram wake_late;
    double busy_max_s;
};

static void record_wake(struct loop_stats *loop, double late_s)
{
    if (late_s < 0)
        late_s = 0.0;
    loop->wakes++;
    loop->wake_late_sum_s += late_s;
    if (late_s > loop->wake_late_max_s)
        loop->wake_late_max_s = late_s;
    histogram_add(&loop->wake_late, late_s);
}

/* ------------------------------------------------------------------------- one direction */

enum outcome { RUN_OK = 0, RUN_GONE = 1, RUN_FAILED = 2 };

struct direction {
    const char *name;
    int rx, tx;
    struct shaper shaper;
    /* The link's own parameters: a fault's state overrides them, and {} restores them. */
    struct dir_config base_config;
    struct dir_stats stats;
    bool reorder;
    struct frame *head, *tail; /* the wire in departure order (no reordering) */
    size_t line_len;
    struct frame **heap; /* min-heap on (depart, seq) when reordering */
    size_t heap_len, heap_cap;
    uint64_t heap_seq;
    bool rx_empty;
    double realtime_offset_s; /* time.time() - time.monotonic(), refreshed by the loop */
    /* --fuzz-frames: count what would be queued instead of keeping it. */
    bool count_only;
    long long enqueued_frames, enqueued_segments;
};

static double realtime_offset(void) { return unix_s() - mono_s(); }

static void direction_init(struct direction *dir, const char *name, int rx, int tx, const struct dir_config *config,
                           uint64_t seed)
{
    memset(dir, 0, sizeof *dir);
    dir->name = name;
    dir->rx = rx;
    dir->tx = tx;
    shaper_init(&dir->shaper, config, seed);
    dir->base_config = *config;
    dir->stats.delay_min_s = INFINITY;
    dir->reorder = config->reorder;
    dir->rx_empty = true;
    dir->realtime_offset_s = realtime_offset();
}

static double next_departure(const struct direction *dir)
{
    if (dir->reorder)
        return dir->heap_len ? dir->heap[0]->depart : 0.0;
    return dir->head ? dir->head->depart : 0.0;
}

static size_t in_flight(const struct direction *dir) { return dir->reorder ? dir->heap_len : dir->line_len; }

static inline bool heap_less(const struct frame *a, const struct frame *b)
{
    return a->depart < b->depart || (a->depart == b->depart && a->seq < b->seq);
}

static void heap_pop(struct direction *dir)
{
    struct frame **heap = dir->heap;
    size_t len = --dir->heap_len;
    if (!len)
        return;
    struct frame *moved = heap[len];
    size_t at = 0;
    for (;;) {
        size_t child = 2 * at + 1;
        if (child >= len)
            break;
        if (child + 1 < len && heap_less(heap[child + 1], heap[child]))
            child++;
        if (!heap_less(heap[child], moved))
            break;
        heap[at] = heap[child];
        at = child;
    }
    heap[at] = moved;
}

/* Queue ``frame`` (taken over) for departure; false when memory ran out (the frame is freed). */
static bool enqueue(struct direction *dir, struct frame *frame, double depart, double arrival, long long segments,
                    long long ip_bytes)
{
    if (dir->count_only) {
        dir->enqueued_frames++;
        dir->enqueued_segments += segments;
        free(frame);
        return true;
    }
    frame->depart = depart;
    frame->arrival = arrival;
    frame->segments = segments;
    frame->ip_bytes = ip_bytes;
    frame->next = NULL;
    if (dir->reorder) {
        if (dir->heap_len == dir->heap_cap) {
            size_t cap = dir->heap_cap ? dir->heap_cap * 2 : 1024;
            struct frame **grown = realloc(dir->heap, cap * sizeof *grown);
            if (!grown) {
                free(frame);
                return false;
            }
            dir->heap = grown;
            dir->heap_cap = cap;
        }
        frame->seq = ++dir->heap_seq;
        size_t at = dir->heap_len++;
        while (at) {
            size_t parent = (at - 1) / 2;
            if (!heap_less(frame, dir->heap[parent]))
                break;
            dir->heap[at] = dir->heap[parent];
            at = parent;
        }
        dir->heap[at] = frame;
    } else {
        if (dir->tail)
            dir->tail->next = frame;
        else
            dir->head = frame;
        dir->tail = frame;
        dir->line_len++;
    }
    return true;
}

static void drop_in_flight(struct direction *dir)
{
    while (dir->head) {
        struct frame *next = dir->head->next;
        free(dir->head);
        dir->head = next;
    }
    dir->tail = NULL;
    dir->line_len = 0;
    for (size_t i = 0; i < dir->heap_len; i++)
        free(dir->heap[i]);
    free(dir->heap);
    dir->heap = NULL;
    dir->heap_len = dir->heap_cap = 0;
}

/* A copy of the received bytes to keep until departure; NULL (counted as a drop) when memory ran out. */
static struct frame *keep_copy(struct direction *dir, const uint8_t *data, size_t length, long long segments)
{
    struct frame *frame = frame_alloc(length);
    if (!frame) {
        dir->stats.drops_tx += segments;
        log_msg(LOG_DEBUG, "%s: out of memory for a frame of %zu bytes", dir->name, length);
        return NULL;
    }
    memcpy(frame->data, data, length);
    return frame;
}

static void enqueue_copy(struct direction *dir, const uint8_t *data, size_t length, double depart, double arrival,
                         long long segments, long long ip_bytes)
{
    struct frame *frame = keep_copy(dir, data, length, segments);
    if (frame && !enqueue(dir, frame, depart, arrival, segments, ip_bytes))
        dir->stats.drops_tx += segments;
}

/*
 * Direction.handle: shape one received frame (vnet header first) that arrived
 * at ``now``. Never fails on its bytes: a frame whose headers cannot be parsed
 * is dropped and counted in ``malformed``.
 */
static void direction_handle(struct direction *dir, const uint8_t *data, size_t length, double now)
{
    struct dir_stats *stats = &dir->stats;
    struct shaper *shaper = &dir->shaper;
    if (length <= VNET_HDR_BYTES) {
        stats->malformed++;
        return;
    }
    stats->frames_in++;
    struct vnet vnet = {data[0], data[1], le16(data + 2), le16(data + 4), le16(data + 6), le16(data + 8)};
    const uint8_t *frame = data + VNET_HDR_BYTES;
    size_t size = length - VNET_HDR_BYTES;
    if (vnet.gso_type == GSO_NONE) {
        /* A plain frame (most often an ACK): what frame_info would say, without parsing it. */
        if (vnet.flags & VNET_F_NEEDS_CSUM && (size_t)vnet.csum_start + vnet.csum_offset + 2 > size) {
            stats->malformed++;
            return;
        }
        long long ip_bytes = (long long)size - (long long)l3_offset(frame, size);
        if (ip_bytes < 1)
            ip_bytes = 1;
        double finish = shaper_offer_one(shaper, now, ip_bytes);
        if (!isnan(finish))
            enqueue_copy(dir, data, length, shaper_departure(shaper, finish), now, 1, ip_bytes);
        return;
    }
    struct frame_info info;
    char why[160];
    if (!frame_info(frame, size, &vnet, &info, why, sizeof why)) {
        stats->malformed++;
        log_msg(LOG_DEBUG, "%s: dropped a malformed frame: %s", dir->name, why);
        return;
    }
    if (info.count == 1) {
        double finish = shaper_offer_one(shaper, now, info.seg_bytes);
        if (!isnan(finish))
            enqueue_copy(dir, data, length, shaper_departure(shaper, finish), now, 1, info.seg_bytes);
        return;
    }
    long long count = info.count;
    long long total = info.seg_bytes * (count - 1) + info.last_bytes;
    unsigned base = info.gso_type & ~(unsigned)GSO_ECN;
    bool splittable = base == GSO_TCPV4 || base == GSO_TCPV6;
    bool slow = (double)(total * 8) / shaper->config.rate_bps > SPLIT_SERIALISATION_S;
    if (!(slow && splittable)) {
        double whole = shaper_offer_whole(shaper, now, info.seg_bytes, info.last_bytes, count, total);
        if (!isnan(whole)) {
            enqueue_copy(dir, data, length, shaper_departure(shaper, whole), now, count, total);
            return;
        }
    }
    if (count > MAX_GSO_SEGMENTS) /* frame_info refuses these; the bound also keeps the arrays safe */
        return;
    /* Static: 40 KB of scratch per frame is too much for a stack frame; only the loop thread gets here. */
    static long long sizes[MAX_GSO_SEGMENTS];
    static double finishes[MAX_GSO_SEGMENTS];
    static bool kept[MAX_GSO_SEGMENTS];
    for (long long i = 0; i < count; i++)
        sizes[i] = i < count - 1 ? info.seg_bytes : info.last_bytes;
    shaper_offer(shaper, now, sizes, (size_t)count, finishes);
    long long kept_count = 0;
    double last_finish = NAN;
    for (long long i = 0; i < count; i++) {
        kept[i] = !isnan(finishes[i]);
        if (kept[i]) {
            kept_count++;
            if (isnan(last_finish) || finishes[i] > last_finish)
                last_finish = finishes[i];
        }
    }
    if (!kept_count)
        return;
    bool all_kept = kept_count == count;
    if (all_kept && !(slow && splittable)) {
        enqueue_copy(dir, data, length, shaper_departure(shaper, last_finish), now, count, total);
        return;
    }
    if (!splittable) {
        /* Not a TCP super-frame we can cut: it lives or dies whole (all_kept was taken above). */
        shaper->drops_loss += kept_count;
        return;
    }
    static struct frame *segments[MAX_GSO_SEGMENTS];
    if (!split_tcp_gso(frame, size, &info, kept, segments)) {
        stats->drops_tx += kept_count;
        log_msg(LOG_DEBUG, "%s: out of memory splitting a super-frame", dir->name);
        return;
    }
    long long index = 0;
    for (long long i = 0; i < count; i++) {
        if (!kept[i])
            continue;
        if (!enqueue(dir, segments[index], shaper_departure(shaper, finishes[i]), now, 1, sizes[i]))
            stats->drops_tx++;
        index++;
    }
}

static uint8_t receive_buffer[RECV_BUFFER_BYTES];

/*
 * Direction.receive: read up to ``budget`` frames and shape them. With
 * ``until_s`` (0 for none) it stops once that time is near, so a departure due
 * then is not held up behind a batch of receives; rx_empty tells a drained
 * socket from a batch cut short.
 */
static enum outcome direction_receive(struct direction *dir, int budget, double until_s, char *why, size_t why_len)
{
    struct dir_stats *stats = &dir->stats;
    dir->rx_empty = false;
    int count = 0;
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    while (count < budget) {
        if (count && until_s != 0.0 && mono_s() + TIMER_GRANULARITY_S >= until_s)
            return RUN_OK;
        count++;
        struct iovec iov = {receive_buffer, sizeof receive_buffer};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                             .msg_controllen = sizeof control.buf};
        ssize_t length = recvmsg(dir->rx, &msg, 0);
        if (length < 0) {
            if (errno == EINTR) {
                count--;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                dir->rx_empty = true;
                return RUN_OK;
            }
            if (errno == ENETDOWN || errno == ENXIO || errno == ENODEV) {
                snprintf(why, why_len, "%s: receive failed: %s", dir->name, strerror(errno));
                return RUN_GONE;
            }
            os_error_text(errno, NULL, why, why_len);
            return RUN_FAILED;
        }
        double now = mono_s();
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
                continue;
            /* The kernel's arrival stamp (CLOCK_REALTIME): frames that waited in the socket while this process
             * was busy still count that wait as queueing, not as free time. */
            struct timespec stamp;
            memcpy(&stamp, CMSG_DATA(cm), sizeof stamp);
            double stamped = (double)stamp.tv_sec + (double)stamp.tv_nsec * 1e-9 - dir->realtime_offset_s;
            /* A stamp from another clock (a sender's departure time carried across veth) would be far off;
             * only a plausible wait is believed. */
            if (now - MAX_RX_LAG_S < stamped && stamped < now) {
                double lag = now - stamped;
                if (lag > stats->rx_lag_max_s)
                    stats->rx_lag_max_s = lag;
                now = stamped;
            }
            break;
        }
        if (msg.msg_flags & MSG_TRUNC) {
            /* Larger than any GSO frame we expect (BIG TCP?): forwarding the cut frame would corrupt it. */
            stats->drops_tx++;
            log_msg(LOG_DEBUG, "%s: dropped a frame larger than %d bytes", dir->name, RECV_BUFFER_BYTES);
            continue;
        }
        direction_handle(dir, receive_buffer, (size_t)length, now);
    }
    return RUN_OK;
}

/* Direction.transmit: send every frame whose departure time has come. */
static enum outcome direction_transmit(struct direction *dir, double now, char *why, size_t why_len)
{
    double horizon = now + TIMER_GRANULARITY_S;
    struct dir_stats *stats = &dir->stats;
    for (;;) {
        struct frame *frame = dir->reorder ? (dir->heap_len ? dir->heap[0] : NULL) : dir->head;
        if (!frame || frame->depart > horizon)
            return RUN_OK;
        double started = mono_s();
        ssize_t sent = send(dir->tx, frame->data, frame->len, 0);
        if (sent < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
                return RUN_OK; /* socket buffer full: retry on the next wake-up */
            if (err == ENETDOWN || err == ENXIO || err == ENODEV) {
                snprintf(why, why_len, "%s: send failed: %s", dir->name, strerror(err));
                return RUN_GONE;
            }
            if (err == ENOBUFS || err == EMSGSIZE || err == EINVAL) {
                stats->drops_tx += frame->segments;
                log_msg(LOG_DEBUG, "%s: dropped a frame on send: [Errno %d] %s", dir->name, err, strerror(err));
            } else {
                os_error_text(err, NULL, why, why_len);
                return RUN_FAILED;
            }
        } else {
            /* The frame is on the peer's queue early in send(); the rest of the call is the receiver's softirq
             * work done in this context, so lateness is taken at the start. */
            double took = mono_s() - started;
            if (took > stats->send_max_s)
                stats->send_max_s = took;
            double late = started - frame->depart;
            record_send(stats, late > 0.0 ? late : 0.0, started - frame->arrival, frame->segments, frame->ip_bytes);
        }
        if (dir->reorder) {
            heap_pop(dir);
        } else {
            dir->head = frame->next;
            if (!dir->head)
                dir->tail = NULL;
            dir->line_len--;
        }
        free(frame);
    }
}

/* ------------------------------------------------------------------------- control (faults while running) */

enum { DIR_BOTH = 0, DIR_A_TO_B = 1, DIR_B_TO_A = 2 };
static const char *const DIRECTION_NAMES[] = {"both", "a_to_b", "b_to_a"};

struct command {
    bool reset;
    long long id;
    double at_monotonic_s;
    int direction;
    json_t *state; /* the state object as received (a reference is held) */
};

static void fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* "got {value!r}" in Python's words, for error messages. */
static void fail_repr(char *why, size_t why_len, const char *prefix, const json_t *value)
{
    struct sbuf sb = {0};
    sb_puts(&sb, prefix);
    sb_py_repr(&sb, value);
    snprintf(why, why_len, "%s", sb.data ? sb.data : prefix);
    sb_free(&sb);
}

static bool is_py_number(const json_t *value) { return json_is_integer(value) || json_is_real(value); }
static double number_value(const json_t *value) { return json_number_value(value); }

static bool command_id(const json_t *data, long long *id, char *why, size_t why_len)
{
    const json_t *value = json_object_get(data, "id");
    if (!value) {
        *id = 0;
        return true;
    }
    if (!json_is_integer(value)) {
        fail_repr(why, why_len, "id must be a whole number, got ", value);
        return false;
    }
    *id = json_integer_value(value);
    return true;
}

/* parse_command: one JSON control line; false with the reason (BadCommand's text) in ``why``. */
static bool parse_command(const char *line, size_t len, struct command *command, char *why, size_t why_len)
{
    json_error_t error;
    memset(command, 0, sizeof *command);
    json_t *data = json_loadb(line, len, JSON_DECODE_ANY, &error);
    if (!data) {
        fail(why, why_len, "not a JSON line: %s: line %d column %d (char %d)", error.text, error.line, error.column,
             error.position);
        return false;
    }
    bool ok = false;
    if (!json_is_object(data)) {
        fail(why, why_len, "a command is a JSON object");
        goto done;
    }
    const json_t *op = json_object_get(data, "op");
    if (op && json_is_string(op) && strcmp(json_string_value(op), "reset") == 0 &&
        strlen(json_string_value(op)) == json_string_length(op)) {
        command->reset = true;
        command->direction = DIR_BOTH;
        ok = command_id(data, &command->id, why, why_len);
        goto done;
    }
    if (op && !(json_is_string(op) && strcmp(json_string_value(op), "set") == 0 &&
                strlen(json_string_value(op)) == json_string_length(op))) {
        struct sbuf sb = {0};
        sb_puts(&sb, "unknown op ");
        sb_py_repr(&sb, op);
        sb_puts(&sb, "; use set or reset");
        snprintf(why, why_len, "%s", sb.data ? sb.data : "unknown op; use set or reset");
        sb_free(&sb);
        goto done;
    }
    const json_t *at = json_object_get(data, "at_monotonic_s");
    double at_s = 0.0;
    if (at) {
        if (!is_py_number(at) || !(number_value(at) >= 0) || isinf(number_value(at))) {
            fail_repr(why, why_len, "at_monotonic_s must be a monotonic time in seconds, got ", at);
            goto done;
        }
        at_s = number_value(at);
    }
    const json_t *direction = json_object_get(data, "direction");
    command->direction = DIR_BOTH;
    if (direction) {
        int found = -1;
        if (json_is_string(direction) && strlen(json_string_value(direction)) == json_string_length(direction))
            for (int i = 0; i < 3; i++)
                if (strcmp(json_string_value(direction), DIRECTION_NAMES[i]) == 0)
                    found = i;
        if (found < 0) {
            fail_repr(why, why_len, "direction must be one of both, a_to_b, b_to_a, got ", direction);
            goto done;
        }
        command->direction = found;
    }
    json_t *state = json_object_get(data, "state");
    if (state && !json_is_object(state)) {
        fail_repr(why, why_len, "state must be a JSON object, got ", state);
        goto done;
    }
    if (!command_id(data, &command->id, why, why_len))
        goto done;
    command->state = state ? json_incref(state) : json_object();
    if (!command->state) {
        fail(why, why_len, "out of memory");
        goto done;
    }
    command->at_monotonic_s = at_s;
    ok = true;
done:
    json_decref(data);
    return ok;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * apply_state: the direction's parameters under ``state`` (overrides of its own
 * ``base``) and whether it is down; false with BadCommand's text in ``why``.
 */
static bool apply_state(const struct dir_config *base, const json_t *state, struct dir_config *out, bool *down,
                        char *why, size_t why_len)
{
    if (!json_is_object(state)) {
        fail_repr(why, why_len, "state must be a JSON object, got ", state);
        return false;
    }
    size_t unknown_count = 0;
    const char *unknown[64];
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)state, key, value) {
        bool known = false;
        for (int i = 0; i < STATE_KEY_COUNT; i++)
            if (strcmp(key, STATE_KEYS[i]) == 0)
                known = true;
        if (!known && unknown_count < 64)
            unknown[unknown_count++] = key;
    }
    if (unknown_count) {
        qsort(unknown, unknown_count, sizeof *unknown, compare_strings);
        struct sbuf sb = {0};
        sb_puts(&sb, "unknown state keys [");
        for (size_t i = 0; i < unknown_count; i++) {
            if (i)
                sb_puts(&sb, ", ");
            sb_py_str(&sb, unknown[i]);
        }
        sb_puts(&sb, "]; allowed: down, delay_ms, extra_delay_ms, rate_mbps, loss");
        snprintf(why, why_len, "%s", sb.data ? sb.data : "unknown state keys");
        sb_free(&sb);
        return false;
    }
    const json_t *down_value = json_object_get(state, "down");
    *down = false;
    if (down_value) {
        if (!json_is_boolean(down_value)) {
            fail_repr(why, why_len, "down must be true or false, got ", down_value);
            return false;
        }
        *down = json_is_true(down_value);
    }
    static const char *const number_keys[] = {"delay_ms", "extra_delay_ms", "rate_mbps", "loss"};
    bool have[4] = {false, false, false, false};
    double numbers[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        const json_t *number = json_object_get(state, number_keys[i]);
        if (!number || json_is_null(number))
            continue;
        if (!is_py_number(number) || !(number_value(number) >= 0) || isinf(number_value(number))) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "%s must be a finite number of zero or more, got ", number_keys[i]);
            fail_repr(why, why_len, prefix, number);
            return false;
        }
        have[i] = true;
        numbers[i] = number_value(number);
    }
    if (have[2] && numbers[2] <= 0) {
        fail(why, why_len, "rate_mbps must be above zero (a link that carries nothing is down: true)");
        return false;
    }
    if (have[3] && numbers[3] >= 1) {
        char shown[48];
        format_float(numbers[3], shown, sizeof shown);
        fail(why, why_len, "loss must be below 1, got %s", shown);
        return false;
    }
    /* Python's expression exactly: base.delay_s * 1e3 / 1e3 need not give back base.delay_s. */
    double delay_s = (have[0] ? numbers[0] : base->delay_s * 1e3) / 1e3 + (have[1] ? numbers[1] : 0.0) / 1e3;
    *out = *base;
    out->rate_bps = have[2] ? numbers[2] * 1e6 : base->rate_bps;
    out->delay_s = delay_s;
    /* min(base.jitter_s, delay_s): the second only when strictly smaller, as Python's min picks. */
    out->jitter_s = !base->reorder ? (delay_s < base->jitter_s ? delay_s : base->jitter_s) : base->jitter_s;
    out->loss = have[3] ? numbers[3] : base->loss;
    out->has_burst = have[3] ? false : base->has_burst;
    return true;
}

/* CommandQueue: commands waiting for their due time, in due order (ties in arrival order). */
struct queued_command {
    double at;
    uint64_t seq;
    struct command command;
};

struct applied_entry {
    long long id;
    double due_s, applied_s;
    int direction;
    char *state_json;
};

struct command_queue {
    struct queued_command *heap;
    size_t len, cap;
    uint64_t seq;
    long long received, refused;
    struct applied_entry applied[CONTROL_LOG]; /* ring, oldest at applied_head */
    size_t applied_head, applied_len;
    char *last_error;
};

static bool queued_less(const struct queued_command *a, const struct queued_command *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static bool queue_push(struct command_queue *queue, struct command *command)
{
    if (queue->len == queue->cap) {
        size_t cap = queue->cap ? queue->cap * 2 : 16;
        struct queued_command *grown = realloc(queue->heap, cap * sizeof *grown);
        if (!grown)
            return false;
        queue->heap = grown;
        queue->cap = cap;
    }
    queue->seq++;
    queue->received++;
    struct queued_command item = {command->at_monotonic_s, queue->seq, *command};
    size_t at = queue->len++;
    while (at) {
        size_t parent = (at - 1) / 2;
        if (!queued_less(&item, &queue->heap[parent]))
            break;
        queue->heap[at] = queue->heap[parent];
        at = parent;
    }
    queue->heap[at] = item;
    return true;
}

static struct command queue_pop(struct command_queue *queue)
{
    struct queued_command *heap = queue->heap;
    struct command top = heap[0].command;
    size_t len = --queue->len;
    if (len) {
        struct queued_command moved = heap[len];
        size_t at = 0;
        for (;;) {
            size_t child = 2 * at + 1;
            if (child >= len)
                break;
            if (child + 1 < len && queued_less(&heap[child + 1], &heap[child]))
                child++;
            if (!queued_less(&heap[child], &moved))
                break;
            heap[at] = heap[child];
            at = child;
        }
        heap[at] = moved;
    }
    return top;
}

static void queue_clear(struct command_queue *queue)
{
    for (size_t i = 0; i < queue->len; i++)
        json_decref(queue->heap[i].command.state);
    queue->len = 0;
}

static void queue_free(struct command_queue *queue)
{
    queue_clear(queue);
    free(queue->heap);
    for (size_t i = 0; i < queue->applied_len; i++)
        free(queue->applied[(queue->applied_head + i) % CONTROL_LOG].state_json);
    free(queue->last_error);
    memset(queue, 0, sizeof *queue);
}

/* ------------------------------------------------------------------------- stats file */

/* write_bytes_atomic: write PATH.tmp<pid> and rename it over PATH, so readers never see half a file. */
static int write_atomic(const char *path, const char *data, size_t len, char *why, size_t why_len)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        snprintf(why, why_len, "[Errno %d] %s: '%s'", err, strerror(err), tmp);
        return err;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            close(fd);
            snprintf(why, why_len, "[Errno %d] %s", err, strerror(err));
            return err;
        }
        done += (size_t)n;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int err = errno;
        snprintf(why, why_len, "[Errno %d] %s: '%s' -> '%s'", err, strerror(err), tmp, path);
        unlink(tmp);
        return err;
    }
    return 0;
}

/*
 * StatsWriter: a thread writes the snapshots, so a file system stall never
 * delays a departure. The loop hands over an already-encoded buffer.
 */
struct stats_writer {
    const char *path;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    char *pending;
    size_t pending_len;
    bool closed, started;
    int errors;
};

static void *stats_writer_loop(void *arg)
{
    struct stats_writer *writer = arg;
    /* The loop thread may be SCHED_FIFO; this one writes files and must never compete with it for a CPU. */
    struct sched_param normal = {0};
    pthread_setschedparam(pthread_self(), SCHED_OTHER, &normal);
    for (;;) {
        pthread_mutex_lock(&writer->lock);
        while (!writer->pending && !writer->closed)
            pthread_cond_wait(&writer->wake, &writer->lock);
        char *snapshot = writer->pending;
        size_t len = writer->pending_len;
        writer->pending = NULL;
        pthread_mutex_unlock(&writer->lock);
        if (!snapshot)
            return NULL;
        char why[PATH_MAX + 128];
        if (write_atomic(writer->path, snapshot, len, why, sizeof why) != 0) {
            writer->errors++;
            if (writer->errors == 1)
                log_msg(LOG_WARNING, "cannot write stats to %s: %s", writer->path, why);
        }
        free(snapshot);
    }
}

static int stats_writer_start(struct stats_writer *writer, const char *path)
{
    memset(writer, 0, sizeof *writer);
    writer->path = path;
    pthread_mutex_init(&writer->lock, NULL);
    pthread_cond_init(&writer->wake, NULL);
    /* Signals belong to the loop thread (its self-pipe), never to this one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = pthread_create(&writer->thread, NULL, stats_writer_loop, writer);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    writer->started = err == 0;
    return err;
}

/* Hand the thread a snapshot (taken over); an older one not yet written is dropped. */
static void stats_writer_submit(struct stats_writer *writer, char *snapshot, size_t len)
{
    pthread_mutex_lock(&writer->lock);
    free(writer->pending);
    writer->pending = snapshot;
    writer->pending_len = len;
    pthread_cond_signal(&writer->wake);
    pthread_mutex_unlock(&writer->lock);
}

/* Stop the thread (waiting at most 5 s for a write in progress, as Python's join does). */
static void stats_writer_stop(struct stats_writer *writer)
{
    if (!writer->started)
        return;
    pthread_mutex_lock(&writer->lock);
    writer->closed = true;
    free(writer->pending);
    writer->pending = NULL;
    pthread_cond_signal(&writer->wake);
    pthread_mutex_unlock(&writer->lock);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    if (pthread_timedjoin_np(writer->thread, NULL, &deadline) != 0)
        pthread_detach(writer->thread); /* stuck in the file system: leave it, like a daemon thread */
    writer->started = false;
}

/* ------------------------------------------------------------------------- priority governor */

/* SCHED_FIFO while the line has CPU to spare; a normal task at nice -10 while it needs nearly a whole core. */
struct governor {
    int priority;
    const char *policy;
    long long switches;
    double cpu_share;
    bool can_fifo;
    double since, cpu_since;
};

static double thread_cpu_s(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

static int set_fifo(int priority)
{
    struct sched_param param = {.sched_priority = priority};
    return sched_setscheduler(0, SCHED_FIFO, &param) == 0 ? 0 : errno;
}

static int set_normal(int nice)
{
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_OTHER, &param) != 0)
        return errno;
    return setpriority(PRIO_PROCESS, 0, nice) == 0 ? 0 : errno;
}

static void governor_init(struct governor *gov, int priority)
{
    memset(gov, 0, sizeof *gov);
    gov->priority = priority;
    gov->policy = "normal";
    gov->since = mono_s();
    gov->cpu_since = thread_cpu_s();
}

static void governor_start(struct governor *gov)
{
    if (gov->priority <= 0)
        return;
    int err = set_fifo(gov->priority);
    if (!err) {
        gov->policy = "fifo";
        gov->can_fifo = true;
        return;
    }
    log_msg(LOG_INFO, "cannot run as SCHED_FIFO %d ([Errno %d] %s); trying nice %d", gov->priority, err,
            strerror(err), BUSY_NICE);
    err = set_normal(BUSY_NICE);
    if (!err)
        gov->policy = "nice";
    else
        log_msg(LOG_INFO, "cannot raise priority ([Errno %d] %s); departures may be late under CPU load", err,
                strerror(err));
}

/* Measure the loop's CPU share over the last window and change policy when it crossed a bound. */
static void governor_tick(struct governor *gov)
{
    double now = mono_s(), cpu = thread_cpu_s();
    double elapsed = now - gov->since;
    if (elapsed < CPU_WINDOW_S)
        return;
    gov->cpu_share = (cpu - gov->cpu_since) / elapsed;
    gov->since = now;
    gov->cpu_since = cpu;
    if (!gov->can_fifo)
        return;
    int err;
    if (strcmp(gov->policy, "fifo") == 0 && gov->cpu_share > FIFO_LEAVE_SHARE) {
        err = set_normal(BUSY_NICE);
        if (!err)
            gov->policy = "nice";
    } else if (strcmp(gov->policy, "nice") == 0 && gov->cpu_share < FIFO_RETURN_SHARE) {
        err = set_fifo(gov->priority);
        if (!err)
            gov->policy = "fifo";
    } else {
        return;
    }
    if (err) {
        log_msg(LOG_WARNING, "cannot change scheduling policy ([Errno %d] %s); staying %s", err, strerror(err),
                gov->policy);
        gov->can_fifo = false;
        return;
    }
    gov->switches++;
    if (strcmp(gov->policy, "fifo") == 0)
        log_msg(LOG_INFO, "the loop used %.0f %% of a core: now SCHED_FIFO", gov->cpu_share * 100);
    else
        log_msg(LOG_INFO, "the loop used %.0f %% of a core: now a normal task at nice %d", gov->cpu_share * 100,
                BUSY_NICE);
}

/* ------------------------------------------------------------------------- the process */

struct delay_line {
    const char *intfs[2];
    const char *stats_path;
    const char *control_path;
    struct governor *governor;
    struct command_queue commands;
    int control_fd;
    struct sbuf control_buf;
    int sock_a, sock_b;
    struct direction a_to_b, b_to_a;
    int timer_fd;
    double timer_armed_s;
    struct loop_stats loop;
    double started_s;
    char *stop_reason;
    int wake_r, wake_w;
    int epoll_fd;
    struct stats_writer writer;
};

static volatile sig_atomic_t caught_signal;
static int signal_pipe_w = -1;

static void on_signal(int signum)
{
    int saved = errno;
    caught_signal = signum;
    if (signal_pipe_w >= 0) {
        ssize_t ignored = write(signal_pipe_w, "x", 1);
        (void)ignored;
    }
    errno = saved;
}

/* One direction's published counters (direction_snapshot: names, units and types as Python writes them). */
static void snapshot_direction(struct sbuf *sb, const struct direction *dir, double now)
{
    const struct shaper *shaper = &dir->shaper;
    const struct dir_stats *stats = &dir->stats;
    long long sends = stats->late_count;
    sb_printf(sb, "{\"frames_in\": %lld, \"packets\": %lld, \"bytes\": %lld, \"drops_queue\": %lld, "
                  "\"drops_loss\": %lld, \"drops_down\": %lld, \"drops_tx\": %lld, \"malformed\": %lld, ",
              stats->frames_in, stats->packets, stats->bytes, shaper->drops_queue, shaper->drops_loss,
              shaper->drops_down, stats->drops_tx, stats->malformed);
    double backlog = shaper_backlog_bytes(shaper, now);
    sb_printf(sb, "\"queue_bytes\": %lld, \"queue_bytes_max\": %lld, \"queue_delay_ms_max\": ",
              (long long)(backlog < 9e18 ? backlog : 9e18),
              (long long)(shaper->queue_bytes_max < 9e18 ? shaper->queue_bytes_max : 9e18));
    sb_float(sb, shaper->queue_delay_max_s * 1e3);
    sb_puts(sb, ", \"queue_delay_ms_mean\": ");
    sb_float(sb, shaper->admitted ? shaper->queue_delay_sum_s / (double)shaper->admitted * 1e3 : 0.0);
    sb_printf(sb, ", \"in_flight_frames\": %zu, \"delay_ms_mean\": ", in_flight(dir));
    sb_float(sb, sends ? stats->delay_sum_s / (double)sends * 1e3 : 0.0);
    sb_puts(sb, ", \"delay_ms_min\": ");
    sb_float(sb, sends ? stats->delay_min_s * 1e3 : 0.0);
    sb_puts(sb, ", \"delay_ms_max\": ");
    sb_float(sb, stats->delay_max_s * 1e3);
    sb_puts(sb, ", \"late_us_mean\": ");
    sb_float(sb, sends ? stats->late_sum_s / (double)sends * 1e6 : 0.0);
    sb_puts(sb, ", \"late_us_p50\": ");
    sb_float(sb, histogram_percentile_us(&stats->late, sends, 0.50));
    sb_puts(sb, ", \"late_us_p99\": ");
    sb_float(sb, histogram_percentile_us(&stats->late, sends, 0.99));
    sb_puts(sb, ", \"late_us_max\": ");
    sb_float(sb, stats->late_max_s * 1e6);
    /* The whole histogram, as [upper bin edge in us, departures] for each non-empty bin: a reader differences
     * two snapshots for the lateness of a window (corridor.links.userspace.late_percentile_between). */
    sb_puts(sb, ", \"late_hist_us\": [");
    bool first = true;
    for (int i = 0; i < LATE_BINS; i++)
        if (stats->late.fine[i]) {
            sb_printf(sb, "%s[%d, %lld]", first ? "" : ", ", (i + 1) * LATE_FINE_BIN_US, stats->late.fine[i]);
            first = false;
        }
    for (int i = 0; i < LATE_BINS; i++)
        if (stats->late.coarse[i]) {
            sb_printf(sb, "%s[%d, %lld]", first ? "" : ", ", (i + 1) * LATE_COARSE_BIN_US, stats->late.coarse[i]);
            first = false;
        }
    sb_puts(sb, "], \"rx_lag_us_max\": ");
    sb_float(sb, stats->rx_lag_max_s * 1e6);
    sb_puts(sb, ", \"send_us_max\": ");
    sb_float(sb, stats->send_max_s * 1e6);
    sb_printf(sb, ", \"down\": %s, \"rate_mbps_now\": ", shaper->down ? "true" : "false");
    sb_float(sb, shaper->config.rate_bps / 1e6);
    sb_puts(sb, ", \"delay_ms_now\": ");
    sb_float(sb, shaper->config.delay_s * 1e3);
    sb_puts(sb, ", \"loss_now\": ");
    sb_float(sb, shaper->config.loss);
    sb_puts(sb, "}");
}

static void sb_string_or_null(struct sbuf *sb, const char *text)
{
    if (text)
        sb_json_string(sb, text);
    else
        sb_puts(sb, "null");
}

/* DelayLine.snapshot as JSON text (NULL when memory ran out). */
static char *snapshot(struct delay_line *line, const char *state, size_t *len_out)
{
    struct sbuf sb = {0};
    double now = mono_s();
    const struct loop_stats *loop = &line->loop;
    sb_puts(&sb, "{\"state\": ");
    sb_json_string(&sb, state);
    sb_printf(&sb, ", \"engine\": \"native\", \"pid\": %d, \"time_unix_s\": ", (int)getpid());
    sb_float(&sb, unix_s());
    sb_puts(&sb, ", \"time_monotonic_s\": ");
    sb_float(&sb, now);
    sb_puts(&sb, ", \"intf_a\": ");
    sb_json_string(&sb, line->intfs[0]);
    sb_puts(&sb, ", \"intf_b\": ");
    sb_json_string(&sb, line->intfs[1]);
    sb_puts(&sb, ", \"uptime_s\": ");
    sb_float(&sb, now - line->started_s);
    sb_puts(&sb, ", \"exit_reason\": ");
    sb_string_or_null(&sb, line->stop_reason);
    sb_puts(&sb, ", \"a_to_b\": ");
    snapshot_direction(&sb, &line->a_to_b, now);
    sb_puts(&sb, ", \"b_to_a\": ");
    snapshot_direction(&sb, &line->b_to_a, now);
    long long wakes = loop->wakes;
    sb_printf(&sb, ", \"loop\": {\"timer_wakes\": %lld, \"wake_late_us_mean\": ", wakes);
    sb_float(&sb, wakes ? loop->wake_late_sum_s / (double)wakes * 1e6 : 0.0);
    sb_puts(&sb, ", \"wake_late_us_p50\": ");
    sb_float(&sb, histogram_percentile_us(&loop->wake_late, wakes, 0.50));
    sb_puts(&sb, ", \"wake_late_us_p99\": ");
    sb_float(&sb, histogram_percentile_us(&loop->wake_late, wakes, 0.99));
    sb_puts(&sb, ", \"wake_late_us_max\": ");
    sb_float(&sb, loop->wake_late_max_s * 1e6);
    sb_puts(&sb, ", \"busy_us_max\": ");
    sb_float(&sb, loop->busy_max_s * 1e6);
    sb_printf(&sb, "}, \"scheduling\": {\"policy\": \"%s\", \"switches\": %lld, \"cpu_share\": ",
              line->governor->policy, line->governor->switches);
    sb_float(&sb, line->governor->cpu_share);
    const struct command_queue *commands = &line->commands;
    sb_puts(&sb, "}, \"control\": {\"path\": ");
    sb_string_or_null(&sb, line->control_path);
    sb_printf(&sb, ", \"received\": %lld, \"refused\": %lld, \"pending\": %zu, \"last_error\": ", commands->received,
              commands->refused, commands->len);
    sb_string_or_null(&sb, commands->last_error);
    sb_puts(&sb, ", \"applied\": [");
    for (size_t i = 0; i < commands->applied_len; i++) {
        const struct applied_entry *entry = &commands->applied[(commands->applied_head + i) % CONTROL_LOG];
        sb_printf(&sb, "%s{\"id\": %lld, \"due_monotonic_s\": ", i ? ", " : "", entry->id);
        sb_float(&sb, entry->due_s);
        sb_puts(&sb, ", \"applied_monotonic_s\": ");
        sb_float(&sb, entry->applied_s);
        sb_printf(&sb, ", \"direction\": \"%s\", \"state\": %s}", DIRECTION_NAMES[entry->direction],
                  entry->state_json ? entry->state_json : "{}");
    }
    sb_puts(&sb, "]}}");
    if (sb.failed) {
        sb_free(&sb);
        return NULL;
    }
    *len_out = sb.len;
    return sb.data;
}

static void refuse(struct delay_line *line, const char *why)
{
    line->commands.refused++;
    char *copy = strdup(why);
    if (copy) {
        free(line->commands.last_error);
        line->commands.last_error = copy;
    }
    log_msg(LOG_WARNING, "control command refused: %s", why);
}

/* DelayLine._apply: put the command's direction(s) into its state now; the command's state is released. */
static void apply_command(struct delay_line *line, struct command *command)
{
    struct direction *targets[2];
    size_t count = 0;
    if (command->direction == DIR_BOTH) {
        targets[count++] = &line->a_to_b;
        targets[count++] = &line->b_to_a;
    } else {
        targets[count++] = command->direction == DIR_A_TO_B ? &line->a_to_b : &line->b_to_a;
    }
    struct dir_config configs[2];
    bool downs[2];
    char why[1024];
    for (size_t i = 0; i < count; i++) {
        if (!apply_state(&targets[i]->base_config, command->state, &configs[i], &downs[i], why, sizeof why)) {
            char message[1100];
            snprintf(message, sizeof message, "command %lld: %s", command->id, why);
            refuse(line, message);
            json_decref(command->state);
            command->state = NULL;
            return;
        }
    }
    for (size_t i = 0; i < count; i++)
        shaper_reconfigure(&targets[i]->shaper, &configs[i], downs[i]);
    double applied = mono_s();
    struct command_queue *queue = &line->commands;
    struct applied_entry *entry;
    if (queue->applied_len == CONTROL_LOG) {
        entry = &queue->applied[queue->applied_head];
        free(entry->state_json);
        queue->applied_head = (queue->applied_head + 1) % CONTROL_LOG;
    } else {
        entry = &queue->applied[(queue->applied_head + queue->applied_len) % CONTROL_LOG];
        queue->applied_len++;
    }
    entry->id = command->id;
    entry->due_s = command->at_monotonic_s;
    entry->applied_s = applied;
    entry->direction = command->direction;
    entry->state_json = json_dumps(command->state, JSON_COMPACT | JSON_ENCODE_ANY);
    struct sbuf shown = {0};
    sb_py_repr(&shown, command->state);
    log_msg(LOG_INFO, "applied command %lld (%s %s), %.3f ms after its due time", command->id,
            DIRECTION_NAMES[command->direction], shown.data ? shown.data : "{}",
            (applied - command->at_monotonic_s) * 1e3);
    sb_free(&shown);
    json_decref(command->state);
    command->state = NULL;
}

/* DelayLine.open_control: create the control FIFO (mode 0600) and open it read-write, non-blocking. */
static int open_control(struct delay_line *line, char *why, size_t why_len)
{
    const char *path = line->control_path;
    if (!path)
        return 0;
    if (mkfifo(path, 0600) != 0) {
        int err = errno;
        if (err != EEXIST) {
            snprintf(why, why_len, "[Errno %d] %s: '%s'", err, strerror(err), path);
            return err;
        }
        struct stat info;
        if (lstat(path, &info) != 0) {
            err = errno;
            snprintf(why, why_len, "[Errno %d] %s: '%s'", err, strerror(err), path);
            return err;
        }
        if (!S_ISFIFO(info.st_mode) || info.st_uid != geteuid()) {
            snprintf(why, why_len, "[Errno %d] control path %s exists and is not our FIFO", EEXIST, path);
            return EEXIST;
        }
    }
    /* Read-write, so the pipe never reports end-of-file between writers. */
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int err = errno;
        snprintf(why, why_len, "[Errno %d] %s: '%s'", err, strerror(err), path);
        return err;
    }
    line->control_fd = fd;
    return 0;
}

static bool blank(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\n\r\v\f", text[i]) || text[i] == '\0')
            return false;
    return true;
}

/* DelayLine.read_control: read every whole command line waiting in the pipe and queue it (or reset at once). */
static enum outcome read_control(struct delay_line *line, char *why, size_t why_len)
{
    if (line->control_fd < 0)
        return RUN_OK;
    struct sbuf *buf = &line->control_buf;
    for (;;) {
        char chunk[65536];
        ssize_t n = read(line->control_fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            os_error_text(errno, NULL, why, why_len);
            return RUN_FAILED;
        }
        if (n == 0)
            break;
        sb_add(buf, chunk, (size_t)n);
        if (buf->failed) {
            snprintf(why, why_len, "[Errno %d] %s", ENOMEM, strerror(ENOMEM));
            return RUN_FAILED;
        }
    }
    if (!buf->len)
        return RUN_OK;
    /* Whole lines are those up to the last newline; the rest waits for more bytes. */
    size_t whole = 0;
    for (size_t i = buf->len; i > 0; i--)
        if (buf->data[i - 1] == '\n') {
            whole = i;
            break;
        }
    char *lines = NULL;
    size_t lines_len = whole;
    if (whole) {
        lines = malloc(whole);
        if (!lines) {
            snprintf(why, why_len, "[Errno %d] %s", ENOMEM, strerror(ENOMEM));
            return RUN_FAILED;
        }
        memcpy(lines, buf->data, whole);
    }
    size_t rest = buf->len - whole;
    memmove(buf->data, buf->data + whole, rest);
    buf->len = rest;
    buf->data[rest] = '\0';
    if (rest > MAX_COMMAND_BYTES) {
        char message[96];
        snprintf(message, sizeof message, "a command line longer than %d bytes", MAX_COMMAND_BYTES);
        refuse(line, message);
        buf->len = 0;
        buf->data[0] = '\0';
    }
    size_t start = 0;
    while (start < lines_len) {
        size_t end = start;
        while (lines[end] != '\n')
            end++;
        const char *text = lines + start;
        size_t len = end - start;
        start = end + 1;
        if (blank(text, len))
            continue;
        struct command command;
        char reason[1024];
        if (!parse_command(text, len, &command, reason, sizeof reason)) {
            refuse(line, reason);
            continue;
        }
        if (command.reset) {
            queue_clear(&line->commands);
            struct command restore = {false, command.id, mono_s(), DIR_BOTH, json_object()};
            if (!restore.state) {
                refuse(line, "out of memory");
                continue;
            }
            apply_command(line, &restore);
        } else if (!queue_push(&line->commands, &command)) {
            json_decref(command.state);
            refuse(line, "out of memory for a command");
        }
    }
    free(lines);
    return RUN_OK;
}

/* DelayLine.apply_due: apply every command due by now (a timer granularity ahead). */
static void apply_due(struct delay_line *line, double now_s)
{
    struct command_queue *queue = &line->commands;
    while (queue->len && queue->heap[0].at <= now_s + TIMER_GRANULARITY_S) {
        struct command command = queue_pop(queue);
        apply_command(line, &command);
    }
}

/* DepartureTimer.arm: fire at monotonic ``at_s`` (0 disarms). */
static enum outcome timer_arm(struct delay_line *line, double at_s, char *why, size_t why_len)
{
    if (at_s == line->timer_armed_s)
        return RUN_OK;
    line->timer_armed_s = at_s;
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (at_s > 0) {
        long long ns = (long long)(at_s * 1e9);
        spec.it_value.tv_sec = ns / 1000000000LL;
        spec.it_value.tv_nsec = ns % 1000000000LL;
        if (!spec.it_value.tv_nsec)
            spec.it_value.tv_nsec = 1;
    }
    if (timerfd_settime(line->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) {
        os_error_text(errno, "timerfd_settime failed", why, why_len);
        return RUN_FAILED;
    }
    return RUN_OK;
}

static void timer_drain(struct delay_line *line)
{
    uint64_t expirations;
    ssize_t ignored = read(line->timer_fd, &expirations, sizeof expirations);
    (void)ignored;
    line->timer_armed_s = 0.0;
}

/* open_packet_socket: AF_PACKET socket bound to ``intf`` that sees only frames arriving on it, with vnet headers. */
static int open_packet_socket(const char *intf, int *out)
{
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0)
        return errno;
    int one = 1, size = SOCKET_BUFFER_BYTES;
    int err = 0;
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0)
        goto failed;
    const int forced[2][2] = {{SO_RCVBUFFORCE, SO_RCVBUF}, {SO_SNDBUFFORCE, SO_SNDBUF}};
    for (int i = 0; i < 2; i++) {
        if (setsockopt(fd, SOL_SOCKET, forced[i][0], &size, sizeof size) == 0)
            continue;
        if ((errno != EPERM && errno != EACCES) || setsockopt(fd, SOL_SOCKET, forced[i][1], &size, sizeof size) != 0)
            goto failed;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) != 0)
        goto failed;
    unsigned index = if_nametoindex(intf);
    if (!index) {
        errno = ENODEV;
        goto failed;
    }
    struct sockaddr_ll addr;
    memset(&addr, 0, sizeof addr);
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = (int)index;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        goto failed;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        goto failed;
    *out = fd;
    return 0;
failed:
    err = errno;
    close(fd);
    return err;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* DelayLine.__init__: both sockets, both directions, the timer and the self-pipe; an errno when one fails. */
static int delay_line_open(struct delay_line *line, const char *intf_a, const char *intf_b,
                           const struct dir_config *a_to_b, const struct dir_config *b_to_a, const char *stats_path,
                           long long seed, const char *control_path, struct governor *governor, char *why,
                           size_t why_len)
{
    memset(line, 0, sizeof *line);
    line->intfs[0] = intf_a;
    line->intfs[1] = intf_b;
    line->stats_path = stats_path;
    line->control_path = control_path;
    line->governor = governor;
    line->control_fd = line->sock_a = line->sock_b = line->timer_fd = -1;
    line->wake_r = line->wake_w = line->epoll_fd = -1;
    int err = open_packet_socket(intf_a, &line->sock_a);
    if (!err)
        err = open_packet_socket(intf_b, &line->sock_b);
    if (err) {
        os_error_text(err, NULL, why, why_len);
        return err;
    }
    uint64_t base_seed = (uint64_t)seed * 2;
    direction_init(&line->a_to_b, "a_to_b", line->sock_a, line->sock_b, a_to_b, base_seed + 1);
    direction_init(&line->b_to_a, "b_to_a", line->sock_b, line->sock_a, b_to_a, base_seed + 2);
    line->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (line->timer_fd < 0) {
        err = errno;
        os_error_text(err, "timerfd_create failed", why, why_len);
        return err;
    }
    /* Wake-ups within 1 us of the asked time rather than the default 50 us slack. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    line->started_s = mono_s();
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        err = errno;
        os_error_text(err, NULL, why, why_len);
        return err;
    }
    line->wake_r = pipe_fds[0];
    line->wake_w = pipe_fds[1];
    return 0;
}

static void delay_line_close(struct delay_line *line)
{
    signal_pipe_w = -1;
    close_fd(&line->epoll_fd);
    close_fd(&line->timer_fd);
    close_fd(&line->sock_a);
    close_fd(&line->sock_b);
    close_fd(&line->wake_r);
    close_fd(&line->wake_w);
    close_fd(&line->control_fd);
    drop_in_flight(&line->a_to_b);
    drop_in_flight(&line->b_to_a);
    shaper_free(&line->a_to_b.shaper);
    shaper_free(&line->b_to_a.shaper);
    queue_free(&line->commands);
    sb_free(&line->control_buf);
    free(line->stop_reason);
    line->stop_reason = NULL;
}

static bool interface_exists(const char *intf) { return if_nametoindex(intf) != 0; }

static double earliest(double a, double b)
{
    if (a != 0.0 && b != 0.0)
        return a < b ? a : b;
    return a != 0.0 ? a : b;
}

static void set_stop_reason(struct delay_line *line, const char *text)
{
    char *copy = strdup(text);
    if (copy) {
        free(line->stop_reason);
        line->stop_reason = copy;
    }
}

static const char *signal_name(int signum)
{
    return signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "SIGNAL";
}

/* One wake-up's worth of the loop (DelayLine.run's body); RUN_GONE and RUN_FAILED carry ``why``. */
static enum outcome loop_body(struct delay_line *line, double *next_stats, char *why, size_t why_len)
{
    struct direction *forward = &line->a_to_b, *backward = &line->b_to_a;
    struct loop_stats *loop = &line->loop;
    enum outcome result;
    double now = mono_s();
    double wait = *next_stats - now;
    int timeout_ms = wait > 0 ? (int)ceil(wait * 1e3) : 0;
    struct epoll_event events[16];
    int count = epoll_wait(line->epoll_fd, events, 16, timeout_ms);
    if (count < 0) {
        if (errno == EINTR)
            return RUN_OK;
        os_error_text(errno, NULL, why, why_len);
        return RUN_FAILED;
    }
    double woke = mono_s();
    bool ready_a = false, ready_b = false;
    for (int i = 0; i < count; i++) {
        int fd = events[i].data.fd;
        uint32_t mask = events[i].events;
        if (mask & (EPOLLERR | EPOLLHUP) && (fd == line->sock_a || fd == line->sock_b)) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            snprintf(why, why_len, "socket on %s reported: %s", line->intfs[fd != line->sock_a],
                     err ? strerror(err) : "Success");
            return RUN_GONE;
        }
        if (fd == line->sock_a) {
            ready_a = true;
        } else if (fd == line->sock_b) {
            ready_b = true;
        } else if (fd == line->timer_fd) {
            record_wake(loop, woke - line->timer_armed_s);
            timer_drain(line);
        } else if (fd == line->control_fd) {
            if ((result = read_control(line, why, why_len)) != RUN_OK)
                return result;
        }
    }
    /* Python asks next_due(), which reads a command due at 0.0 as "none"; the queue's length does not. */
    if (line->commands.len)
        apply_due(line, mono_s());
    /* Departures first: the wake-up is most often the timer's. */
    now = mono_s();
    if ((result = direction_transmit(forward, now, why, why_len)) != RUN_OK ||
        (result = direction_transmit(backward, now, why, why_len)) != RUN_OK)
        return result;
    /* Read both sides in turns and send what is due between small batches, so a flood one way neither starves
     * the other direction nor delays departures: a batch stops early when the next departure comes due. */
    int rounds = 0;
    while ((ready_a || ready_b) && rounds < MAX_RECEIVE_ROUNDS) {
        rounds++;
        double until = earliest(next_departure(forward), next_departure(backward));
        if (ready_a) {
            if ((result = direction_receive(forward, RECEIVE_BATCH, until, why, why_len)) != RUN_OK)
                return result;
            ready_a = !forward->rx_empty;
        }
        if (ready_b) {
            if ((result = direction_receive(backward, RECEIVE_BATCH, until, why, why_len)) != RUN_OK)
                return result;
            ready_b = !backward->rx_empty;
        }
        now = mono_s();
        if ((result = direction_transmit(forward, now, why, why_len)) != RUN_OK ||
            (result = direction_transmit(backward, now, why, why_len)) != RUN_OK)
            return result;
    }
    now = mono_s();
    if ((result = direction_transmit(forward, now, why, why_len)) != RUN_OK ||
        (result = direction_transmit(backward, now, why, why_len)) != RUN_OK)
        return result;
    double next = earliest(next_departure(forward), next_departure(backward));
    if (next != 0.0) {
        /* Retry soon if a send was refused and the head is already due. */
        double soon = mono_s() + RETRY_S;
        if (next < soon)
            next = soon;
    }
    if (line->commands.len) {
        double due = line->commands.heap[0].at;
        next = next != 0.0 ? (due < next ? due : next) : due;
        if (next <= 0.0)
            next = mono_s(); /* a command due at 0 (long ago): wake now rather than disarm */
    }
    if ((result = timer_arm(line, next, why, why_len)) != RUN_OK)
        return result;
    double busy = mono_s() - woke;
    if (busy > loop->busy_max_s)
        loop->busy_max_s = busy;
    if (now >= *next_stats) {
        double offset = realtime_offset();
        forward->realtime_offset_s = backward->realtime_offset_s = offset;
        for (int i = 0; i < 2; i++)
            if (!interface_exists(line->intfs[i])) {
                snprintf(why, why_len, "interface %s disappeared", line->intfs[i]);
                return RUN_GONE;
            }
        governor_tick(line->governor);
        size_t len;
        char *text = snapshot(line, "running", &len);
        if (text)
            stats_writer_submit(&line->writer, text, len);
        *next_stats = now + STATS_INTERVAL_S;
    }
    return RUN_OK;
}

/* DelayLine.run: the event loop; returns the exit status (``why`` holds the failure for EXIT_FAILED). */
static int delay_line_run(struct delay_line *line, char *why, size_t why_len)
{
    signal_pipe_w = line->wake_w;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    line->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (line->epoll_fd < 0) {
        os_error_text(errno, NULL, why, why_len);
        return EXIT_FAILED;
    }
    int fds[4] = {line->sock_a, line->sock_b, line->timer_fd, line->wake_r};
    for (int i = 0; i < 4; i++) {
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(line->epoll_fd, EPOLL_CTL_ADD, fds[i], &event) != 0) {
            os_error_text(errno, NULL, why, why_len);
            return EXIT_FAILED;
        }
    }
    if (open_control(line, why, why_len) != 0)
        return EXIT_FAILED;
    if (line->control_fd >= 0) {
        struct epoll_event event = {.events = EPOLLIN, .data.fd = line->control_fd};
        if (epoll_ctl(line->epoll_fd, EPOLL_CTL_ADD, line->control_fd, &event) != 0) {
            os_error_text(errno, NULL, why, why_len);
            return EXIT_FAILED;
        }
    }
    size_t len;
    char *text = snapshot(line, "running", &len); /* the readiness signal */
    if (!text) {
        os_error_text(ENOMEM, NULL, why, why_len);
        return EXIT_FAILED;
    }
    int err = write_atomic(line->stats_path, text, len, why, why_len);
    free(text);
    if (err)
        return EXIT_FAILED;
    if ((err = stats_writer_start(&line->writer, line->stats_path)) != 0) {
        os_error_text(err, NULL, why, why_len);
        return EXIT_FAILED;
    }
    log_msg(LOG_INFO, "delay line %s <-> %s running (pid %d)", line->intfs[0], line->intfs[1], (int)getpid());
    double next_stats = mono_s() + STATS_INTERVAL_S;
    enum outcome result = RUN_OK;
    char reason[1024];
    while (!line->stop_reason) {
        if (caught_signal) {
            char text_reason[64];
            snprintf(text_reason, sizeof text_reason, "signal %s", signal_name(caught_signal));
            set_stop_reason(line, text_reason);
            break;
        }
        result = loop_body(line, &next_stats, reason, sizeof reason);
        if (result == RUN_GONE) {
            set_stop_reason(line, reason);
            log_msg(LOG_WARNING, "delay line stopping: %s", reason);
            break;
        }
        if (result == RUN_FAILED) {
            snprintf(why, why_len, "%s", reason);
            break;
        }
    }
    if (caught_signal && !line->stop_reason) {
        char text_reason[64];
        snprintf(text_reason, sizeof text_reason, "signal %s", signal_name(caught_signal));
        set_stop_reason(line, text_reason);
    }
    /* StatsWriter.close: stop the thread, then the final snapshot synchronously. */
    stats_writer_stop(&line->writer);
    text = snapshot(line, "stopped", &len);
    if (!text) {
        os_error_text(ENOMEM, NULL, why, why_len);
        return EXIT_FAILED;
    }
    char final_why[PATH_MAX + 128];
    err = write_atomic(line->stats_path, text, len, final_why, sizeof final_why);
    free(text);
    if (result == RUN_FAILED)
        return EXIT_FAILED;
    if (err) {
        snprintf(why, why_len, "%.900s", final_why);
        return EXIT_FAILED;
    }
    log_msg(LOG_INFO, "delay line stopped: %s", line->stop_reason ? line->stop_reason : "None");
    return EXIT_OK;
}

/* ------------------------------------------------------------------------- test modes */

/* --shaper-trace: Shaper.release_times for each stdin line "ARRIVAL_S SIZE[,SIZE...]". */
static int shaper_trace(const struct dir_config *config, long long seed)
{
    struct shaper shaper;
    shaper_init(&shaper, config, (uint64_t)seed * 2 + 1);
    char *text = NULL;
    size_t cap = 0;
    ssize_t got;
    long long *sizes = NULL;
    double *finishes = NULL;
    size_t size_cap = 0;
    int status = EXIT_OK;
    long line_number = 0;
    struct sbuf out = {0};
    while ((got = getline(&text, &cap, stdin)) >= 0) {
        line_number++;
        char *p = text;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\n' || *p == '\r' || *p == '\0')
            continue;
        char *end;
        double arrival = strtod(p, &end);
        if (end == p) {
            fprintf(stderr, "--shaper-trace: line %ld: expected ARRIVAL_S SIZE[,SIZE...]\n", line_number);
            status = EXIT_BAD_ARGS;
            break;
        }
        p = end;
        size_t count = 0;
        bool bad = false;
        for (;;) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            if (*p == '\n' || *p == '\r' || *p == '\0')
                break;
            long long size = strtoll(p, &end, 10);
            if (end == p) {
                bad = true;
                break;
            }
            p = end;
            if (count == size_cap) {
                size_t new_cap = size_cap ? size_cap * 2 : 64;
                long long *grown_sizes = realloc(sizes, new_cap * sizeof *grown_sizes);
                if (grown_sizes)
                    sizes = grown_sizes;
                double *grown_finishes = grown_sizes ? realloc(finishes, new_cap * sizeof *grown_finishes) : NULL;
                if (grown_finishes)
                    finishes = grown_finishes;
                if (!grown_sizes || !grown_finishes) {
                    fprintf(stderr, "--shaper-trace: out of memory\n");
                    status = EXIT_FAILED;
                    goto done;
                }
                size_cap = new_cap;
            }
            sizes[count++] = size;
        }
        if (bad || count == 0) {
            fprintf(stderr, "--shaper-trace: line %ld: expected ARRIVAL_S SIZE[,SIZE...]\n", line_number);
            status = EXIT_BAD_ARGS;
            break;
        }
        shaper_offer(&shaper, arrival, sizes, count, finishes);
        out.len = 0;
        for (size_t i = 0; i < count; i++) {
            if (i)
                sb_puts(&out, " ");
            if (isnan(finishes[i]))
                sb_puts(&out, "drop");
            else
                sb_printf(&out, "%.9f", shaper_departure(&shaper, finishes[i]));
        }
        sb_puts(&out, "\n");
        if (out.failed) {
            status = EXIT_FAILED;
            break;
        }
        fwrite(out.data, 1, out.len, stdout);
    }
done:
    fflush(stdout);
    free(text);
    free(sizes);
    free(finishes);
    sb_free(&out);
    shaper_free(&shaper);
    return status;
}

static bool read_exact(FILE *in, uint8_t *buf, size_t len)
{
    return fread(buf, 1, len, in) == len;
}

/* --fuzz-frames: every stdin record through the a_to_b direction's handle(); prints the counters. */
static int fuzz_frames(const struct dir_config *config, long long seed)
{
    struct direction dir;
    direction_init(&dir, "a_to_b", -1, -1, config, (uint64_t)seed * 2 + 1);
    dir.count_only = true;
    uint8_t *buf = NULL;
    size_t cap = 0;
    long long frames = 0;
    uint8_t header[4];
    int status = EXIT_OK;
    while (read_exact(stdin, header, 4)) {
        size_t len = (size_t)header[0] | (size_t)header[1] << 8 | (size_t)header[2] << 16 | (size_t)header[3] << 24;
        if (len > cap) {
            uint8_t *grown = realloc(buf, len);
            if (!grown) {
                fprintf(stderr, "--fuzz-frames: no memory for a record of %zu bytes\n", len);
                status = EXIT_FAILED;
                break;
            }
            buf = grown;
            cap = len;
        }
        if (!read_exact(stdin, buf, len)) {
            fprintf(stderr, "--fuzz-frames: the last record is cut short\n");
            break;
        }
        frames++;
        direction_handle(&dir, buf, len, mono_s());
    }
    printf("{\"frames\": %lld, \"malformed\": %lld, \"enqueued_frames\": %lld, \"enqueued_segments\": %lld, "
           "\"drops_queue\": %lld, \"drops_loss\": %lld}\n",
           frames, dir.stats.malformed, dir.enqueued_frames, dir.enqueued_segments, dir.shaper.drops_queue,
           dir.shaper.drops_loss);
    fflush(stdout);
    free(buf);
    shaper_free(&dir.shaper);
    return status;
}

/* ------------------------------------------------------------------------- command line */

#define PROG "corridor-delayline"
#define USAGE                                                                                                  \
    "usage: " PROG " [-h] --intf-a INTF_A --intf-b INTF_B --a-to-b A_TO_B --b-to-a B_TO_A --stats STATS\n" \
    "       [--seed SEED] [--control CONTROL] [--log-level LOG_LEVEL] [--priority PRIORITY]\n"                 \
    "       [--cpu CPU] [--shaper-trace] [--fuzz-frames]\n"

struct options {
    const char *intf_a, *intf_b, *a_to_b, *b_to_a, *stats, *control, *log_level;
    const char *seed_text, *priority_text, *cpu_text;
    long long seed;
    int priority;
    int cpu; /* -1: wherever the scheduler puts it */
    bool shaper_trace, fuzz_frames;
};

struct option_spec {
    const char *name;
    bool takes_value;
    size_t offset; /* of the const char * (or bool) in struct options */
};

#define OPT(name, field, value) {name, value, offsetof(struct options, field)}
static const struct option_spec OPTION_SPECS[] = {
    OPT("--intf-a", intf_a, true),          OPT("--intf-b", intf_b, true),
    OPT("--a-to-b", a_to_b, true),          OPT("--b-to-a", b_to_a, true),
    OPT("--stats", stats, true),            OPT("--seed", seed_text, true),
    OPT("--control", control, true),        OPT("--log-level", log_level, true),
    OPT("--priority", priority_text, true), OPT("--shaper-trace", shaper_trace, false),
    OPT("--fuzz-frames", fuzz_frames, false), OPT("--cpu", cpu_text, true),
};
#define OPTION_COUNT (sizeof OPTION_SPECS / sizeof OPTION_SPECS[0])

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    fputs(USAGE, stderr);
    fprintf(stderr, PROG ": error: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_BAD_ARGS;
}

static bool parse_int(const char *text, long long *out)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\n')
        end++;
    if (end == text || *end || errno)
        return false;
    *out = value;
    return true;
}

/* parse_args: argparse's behaviour for these options (--opt value, --opt=value, unique prefixes); 0 or an exit. */
static int parse_args(int argc, char **argv, struct options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->seed = 1;
    opts->priority = REALTIME_PRIORITY;
    opts->cpu = -1;
    opts->log_level = "INFO";
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(USAGE, stdout);
            exit(EXIT_OK);
        }
        if (strncmp(arg, "--", 2) != 0 || strlen(arg) == 2)
            return usage_error("unrecognized arguments: %s", arg);
        const char *equals = strchr(arg, '=');
        size_t name_len = equals ? (size_t)(equals - arg) : strlen(arg);
        const struct option_spec *spec = NULL;
        int matches = 0;
        for (size_t k = 0; k < OPTION_COUNT; k++) {
            const char *name = OPTION_SPECS[k].name;
            if (strlen(name) == name_len && strncmp(name, arg, name_len) == 0) {
                spec = &OPTION_SPECS[k];
                matches = 1;
                break;
            }
            if (strlen(name) > name_len && strncmp(name, arg, name_len) == 0) {
                spec = &OPTION_SPECS[k];
                matches++;
            }
        }
        if (matches > 1)
            return usage_error("ambiguous option: %.*s", (int)name_len, arg);
        if (!spec)
            return usage_error("unrecognized arguments: %s", arg);
        char *field = (char *)opts + spec->offset;
        if (!spec->takes_value) {
            if (equals)
                return usage_error("argument %s: ignored explicit argument '%s'", spec->name, equals + 1);
            *(bool *)field = true;
            continue;
        }
        const char *value;
        if (equals) {
            value = equals + 1;
        } else {
            if (i + 1 >= argc || (strncmp(argv[i + 1], "--", 2) == 0 && strlen(argv[i + 1]) > 2))
                return usage_error("argument %s: expected one argument", spec->name);
            value = argv[++i];
        }
        *(const char **)field = value;
    }
    if (opts->seed_text && !parse_int(opts->seed_text, &opts->seed))
        return usage_error("argument --seed: invalid int value: '%s'", opts->seed_text);
    if (opts->priority_text) {
        long long priority;
        if (!parse_int(opts->priority_text, &priority) || priority < INT_MIN || priority > INT_MAX)
            return usage_error("argument --priority: invalid int value: '%s'", opts->priority_text);
        opts->priority = (int)priority;
    }
    if (opts->cpu_text) {
        long long cpu;
        if (!parse_int(opts->cpu_text, &cpu) || cpu < 0 || cpu >= CPU_SETSIZE)
            return usage_error("argument --cpu: invalid CPU number: '%s'", opts->cpu_text);
        opts->cpu = (int)cpu;
    }
    bool test_mode = opts->shaper_trace || opts->fuzz_frames;
    char missing[256] = "";
    const char *names[] = {"--intf-a", "--intf-b", "--a-to-b", "--b-to-a", "--stats"};
    const char *values[] = {opts->intf_a, opts->intf_b, opts->a_to_b, opts->b_to_a, opts->stats};
    for (int k = 0; k < 5; k++) {
        if (values[k] || (test_mode && k != 2))
            continue;
        if (missing[0])
            strcat(missing, ", ");
        strcat(missing, names[k]);
    }
    if (missing[0])
        return usage_error("the following arguments are required: %s", missing);
    return 0;
}

static bool set_log_level(const char *text)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"DEBUG", LOG_DEBUG}, {"INFO", LOG_INFO},   {"WARNING", LOG_WARNING}, {"WARN", LOG_WARNING},
                  {"ERROR", LOG_ERROR}, {"CRITICAL", LOG_CRITICAL}, {"FATAL", LOG_CRITICAL}, {"NOTSET", 0}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcasecmp(text, levels[i].name) == 0) {
            log_threshold = levels[i].level;
            return true;
        }
    return false;
}

int main(int argc, char **argv)
{
    struct options opts;
    int status = parse_args(argc, argv, &opts);
    if (status)
        return status;
    if (!set_log_level(opts.log_level)) {
        fprintf(stderr, PROG ": error: unknown log level '%s'\n", opts.log_level);
        return EXIT_BAD_ARGS;
    }
    struct dir_config a_to_b, b_to_a;
    char why[1024];
    if (!config_from_json(opts.a_to_b, &a_to_b, why, sizeof why) ||
        (opts.b_to_a && !config_from_json(opts.b_to_a, &b_to_a, why, sizeof why))) {
        log_msg(LOG_ERROR, "bad direction parameters: %s", why);
        return EXIT_BAD_ARGS;
    }
    if (opts.shaper_trace)
        return shaper_trace(&a_to_b, opts.seed);
    if (opts.fuzz_frames)
        return fuzz_frames(&a_to_b, opts.seed);
    if (opts.cpu >= 0) {
        /* Pinned so the receiving stacks' work, steered to the other CPUs (corridor.links.steering), stays off
         * this one. */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opts.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            log_msg(LOG_ERROR, "cannot run on CPU %d: %s", opts.cpu, strerror(errno));
            return EXIT_BAD_ARGS;
        }
    }
    struct governor governor;
    governor_init(&governor, opts.priority);
    governor_start(&governor);
    static struct delay_line line; /* static: the histograms make it large for a stack */
    if (delay_line_open(&line, opts.intf_a, opts.intf_b, &a_to_b, &b_to_a, opts.stats, opts.seed, opts.control,
                        &governor, why, sizeof why) != 0) {
        log_msg(LOG_ERROR, "cannot open interfaces %s and %s: %s", opts.intf_a, opts.intf_b, why);
        delay_line_close(&line);
        return EXIT_BAD_ARGS;
    }
    status = delay_line_run(&line, why, sizeof why);
    if (status == EXIT_FAILED)
        log_msg(LOG_ERROR, "delay line %s <-> %s failed: %s", opts.intf_a, opts.intf_b, why);
    delay_line_close(&line);
    return status;
}
