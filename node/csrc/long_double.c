/* Float increments exactly as Redis 7.0 computes and prints them
 * (t_string.c incrbyfloatCommand, t_hash.c hincrbyfloatCommand): C's long
 * double, read with Redis's string2ld and printed with ld2string's
 * LD_STR_HUMAN mode. Called from node/src/resp/long_double.rs. */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redis's MAX_LONG_DOUBLE_CHARS. */
#define MT_LD_CHARS (5 * 1024)

/* Redis's string2ld: 1 when s[0..slen) is a long double, in *dp. */
static int mt_string2ld(const char *s, size_t slen, long double *dp) {
    char buf[MT_LD_CHARS];
    long double value;
    char *eptr;

    if (slen == 0 || slen >= sizeof(buf)) return 0;
    memcpy(buf, s, slen);
    buf[slen] = '\0';

    errno = 0;
    value = strtold(buf, &eptr);
    if (isspace((unsigned char)buf[0]) || eptr[0] != '\0' ||
        (size_t)(eptr - buf) != slen ||
        (errno == ERANGE &&
            (value == HUGE_VALL || value == -HUGE_VALL || fpclassify(value) == FP_ZERO)) ||
        errno == EINVAL ||
        isnan(value))
        return 0;
    *dp = value;
    return 1;
}

static long mt_ld_print(long double value, char *out);

/* current + by, printed into out (MT_LD_CHARS bytes) as Redis's
 * ld2string(LD_STR_HUMAN). Returns the length, or: -1 current is not a
 * float, -2 by is not a float (checked first), -3 by is infinite, -4 the
 * sum is not finite. A NULL current is 0 (a missing key or field). */
long mt_ld_incr(const char *current, size_t current_len, const char *by, size_t by_len,
                char *out) {
    long double value = 0, incr;
    if (!mt_string2ld(by, by_len, &incr)) return -2;
    if (current != NULL && !mt_string2ld(current, current_len, &value)) return -1;
    if (isinf(incr)) return -3;
    value += incr;
    if (isnan(value) || isinf(value)) return -4;
    return mt_ld_print(value, out);
}

/* x as a long double printed by ld2string(LD_STR_HUMAN) into out
 * (MT_LD_CHARS bytes), as addReplyHumanLongDouble shows GEOPOS's
 * coordinates. Returns the length, or -4 when it does not fit. */
long mt_ld_human(double x, char *out) {
    return mt_ld_print((long double)x, out);
}

/* ld2string(LD_STR_HUMAN): "%.17Lf", trailing zeros (and a bare dot)
 * dropped, "-0" printed "0". Returns the length, or -4. */
static long mt_ld_print(long double value, char *out) {
    int l = snprintf(out, MT_LD_CHARS, "%.17Lf", value);
    if (l < 0 || l + 1 > MT_LD_CHARS) return -4;
    if (strchr(out, '.') != NULL) {
        char *p = out + l - 1;
        while (*p == '0') {
            p--;
            l--;
        }
        if (*p == '.') l--;
    }
    if (l == 2 && out[0] == '-' && out[1] == '0') {
        out[0] = '0';
        l = 1;
    }
    return l;
}

/* A blocking command's timeout in seconds as Redis's
 * getTimeoutFromObjectOrReply(UNIT_SECONDS) reads it: string2ld, then
 * (long long) ceill(seconds * 1000) (a value past the range of long long
 * converts as the platform does: on x86-64 to LLONG_MIN, which Redis then
 * calls negative). Returns 0 when it is not a long double. */
int mt_timeout_ms(const char *s, size_t slen, long long *ms) {
    long double seconds;
    if (!mt_string2ld(s, slen, &seconds)) return 0;
    *ms = (long long)ceill(seconds * 1000.0L);
    return 1;
}
