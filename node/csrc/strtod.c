/* Float arguments read exactly as Redis 7.0 reads them, with the C
 * library's strtod (hex floats, "inf", leading spaces where strtod skips
 * them): util.c string2d (scores, weights, increments: no leading space,
 * no trailing bytes, no overflow or underflow to zero, no NaN) and t_zset.c
 * zslParseRange (score bounds: strtod up to the first NUL byte, only NaN
 * refused) and sort.c (values to sort by: as zslParseRange, and ERANGE
 * refused too). Called from node/src/resp/args.rs. */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A NUL-terminated copy of s[0..slen) (Redis's strings are), or NULL. */
static char *mt_terminated(const char *s, size_t slen) {
    char *buf = malloc(slen + 1);
    if (buf == NULL) return NULL;
    memcpy(buf, s, slen);
    buf[slen] = '\0';
    return buf;
}

/* Redis's string2d: 1 when s[0..slen) is a double, in *dp. */
int mt_string2d(const char *s, size_t slen, double *dp) {
    char *buf, *eptr;
    double value;
    int ok;

    if (slen == 0) return 0;
    buf = mt_terminated(s, slen);
    if (buf == NULL) return 0;
    errno = 0;
    value = strtod(buf, &eptr);
    ok = !(isspace((unsigned char)buf[0]) ||
           (size_t)(eptr - buf) != slen ||
           (errno == ERANGE &&
               (value == HUGE_VAL || value == -HUGE_VAL || fpclassify(value) == FP_ZERO)) ||
           isnan(value));
    free(buf);
    if (ok) *dp = value;
    return ok;
}

/* strtod over s[0..slen) up to its end or a NUL byte: 1 when it reads
 * that far and the value is not NaN (nor, with refuse_erange, out of
 * range), the value in *dp. An empty string reads as 0. */
static int mt_strtod_to_end(const char *s, size_t slen, double *dp, int refuse_erange) {
    char *buf, *eptr;
    double value;
    int ok;

    buf = mt_terminated(s, slen);
    if (buf == NULL) return 0;
    errno = 0;
    value = strtod(buf, &eptr);
    ok = eptr[0] == '\0' && !isnan(value) && !(refuse_erange && errno == ERANGE);
    free(buf);
    if (ok) *dp = value;
    return ok;
}

/* zslParseRange's reading of one bound (its "(" already taken off): only
 * NaN refused, so 1e400 is inf. */
int mt_range_strtod(const char *s, size_t slen, double *dp) {
    return mt_strtod_to_end(s, slen, dp, 0);
}

/* sort.c's reading of a value to sort by (the element itself, or what a
 * BY pattern found): an overflow or underflow (ERANGE) refused too. */
int mt_sort_strtod(const char *s, size_t slen, double *dp) {
    return mt_strtod_to_end(s, slen, dp, 1);
}
