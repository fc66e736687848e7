/*
 * The "compiled" engine's element-wise and folding work of the layered step (convolution
 * backward's col2im, the fixed-point division by 2**f, tabulated activations and the
 * division of an error by their slopes, max pooling both ways), with integer instructions
 * only (tests/test_compiled.py disassembles the library to check).
 *
 * Each function computes exactly what the numpy reference of its layer computes
 * (pocketnn.nn.layers; tests/test_layer_ops.py holds them to it): C division truncates
 * toward zero as the layers' trunc_div does, and a division by 2**s is the shift
 * (a + ((a >> 63) & (2**s - 1))) >> s, the same truncation without a divide instruction.
 * The Python side (pocketnn.engines.compiled.layer_ops) passes only what these take and
 * checks bounds before calling: nothing here can overflow. Nothing is global or static-mutable.
 */
#include <stdint.h>
#include <string.h>

enum { LCODE_I8, LCODE_I16, LCODE_I32, LCODE_I64, LCODE_U8 }; /* layer_ops.CODES */
#define LBAD (-3)
#define ZERO_DIVISOR 1

/* a / 2**s, truncating toward zero, for 0 <= s <= 62 */
static inline int64_t shr_trunc(int64_t a, int64_t s)
{
    return (a + ((a >> 63) & (((int64_t)1 << s) - 1))) >> s;
}

/* out[i] = a[i] / 2**shift, truncating (out may be a). */
int64_t pnn_shift_div(const int64_t *a, int64_t count, int64_t shift, int64_t *out)
{
    if (shift < 0 || shift > 62 || count < 0) return LBAD;
    for (int64_t i = 0; i < count; i++) out[i] = shr_trunc(a[i], shift);
    return 0;
}

/*
 * col2im, then / 2**shift: cols (n * ho * wo rows of c * k * k, row-major int64; rows in
 * (image, y, x) order, columns in (channel, ky, kx) order) added back onto the input
 * positions they were unfolded from, into out (n, h, w, c), row-major: one image at a
 * time, so the image's sums stay in cache until they are divided. The caller has checked
 * that every sum fits int64.
 */
int64_t pnn_fold(const int64_t *cols, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                 int64_t stride, int64_t pad, int64_t shift, int64_t *out)
{
    if (n < 0 || c < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad < 0 || shift < 0 ||
        shift > 62)
        return LBAD;
    const int64_t ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    const int64_t kk = k * k, width = c * kk, image = h * w * c;
    for (int64_t i = 0; i < n; i++) {
        int64_t *o = out + i * image;
        memset(o, 0, sizeof(int64_t) * (size_t)image);
        for (int64_t oy = 0; oy < ho; oy++) {
            for (int64_t ox = 0; ox < wo; ox++) {
                const int64_t *row = cols + ((i * ho + oy) * wo + ox) * width;
                for (int64_t ky = 0; ky < k; ky++) {
                    const int64_t y = oy * stride + ky - pad;
                    if (y < 0 || y >= h) continue;
                    for (int64_t kx = 0; kx < k; kx++) {
                        const int64_t x = ox * stride + kx - pad;
                        if (x < 0 || x >= w) continue;
                        int64_t *at = o + (y * w + x) * c;
                        const int64_t *from = row + ky * k + kx;
                        for (int64_t ch = 0; ch < c; ch++) at[ch] += from[ch * kk];
                    }
                }
            }
        }
        if (shift)
            for (int64_t j = 0; j < image; j++) o[j] = shr_trunc(o[j], shift);
    }
    return 0;
}

/* A table entry of `size` bytes, copied (the tables are already in the outputs' dtypes). */
static inline void put_entry(char *dst, const char *table, int64_t index, int64_t size)
{
    switch (size) {
    case 1: dst[0] = table[index]; break;
    case 2: memcpy(dst, table + 2 * index, 2); break;
    case 4: memcpy(dst, table + 4 * index, 4); break;
    default: memcpy(dst, table + 8 * index, 8); break;
    }
}

/*
 * A tabulated activation: x = z / 2**shift / divisor (truncating each time; shift 0 and
 * divisor 1 for none), clipped to [low, high], then y[i] = ytab[x - low] and (g not NULL)
 * g[i] = gtab[x - low], entries of ysize and gsize bytes.
 */
#define TABLE_INDEX(DIVIDE)                                                                  \
    int64_t x = shr_trunc(z[i], shift);                                                      \
    DIVIDE;                                                                                  \
    x = (x < low ? low : x > high ? high : x) - low
/* the common types (8/16-bit y; g of 8 to 64 bits) in typed loops, any others by size */
#define TABLE_TYPED(DIVIDE, YT, GT)                                                          \
    do {                                                                                     \
        const YT *yt = (const YT *)ytab;                                                     \
        const GT *gt = (const GT *)gtab;                                                     \
        YT *yo = (YT *)y;                                                                    \
        GT *go = (GT *)g;                                                                    \
        if (g)                                                                               \
            for (int64_t i = 0; i < count; i++) {                                            \
                TABLE_INDEX(DIVIDE);                                                         \
                yo[i] = yt[x];                                                               \
                go[i] = gt[x];                                                               \
            }                                                                                \
        else                                                                                 \
            for (int64_t i = 0; i < count; i++) {                                            \
                TABLE_INDEX(DIVIDE);                                                         \
                yo[i] = yt[x];                                                               \
            }                                                                                \
    } while (0)
#define TABLE_G(DIVIDE, YT)                                                                  \
    switch (gsize) {                                                                         \
    case 1: TABLE_TYPED(DIVIDE, YT, int8_t); break;                                          \
    case 2: TABLE_TYPED(DIVIDE, YT, int16_t); break;                                         \
    case 4: TABLE_TYPED(DIVIDE, YT, int32_t); break;                                         \
    default: TABLE_TYPED(DIVIDE, YT, int64_t); break;                                        \
    }
#define TABLE_LOOP(DIVIDE)                                                                   \
    if (ysize == 1) {                                                                        \
        TABLE_G(DIVIDE, int8_t)                                                              \
    } else if (ysize == 2) {                                                                 \
        TABLE_G(DIVIDE, int16_t)                                                             \
    } else {                                                                                 \
        for (int64_t i = 0; i < count; i++) {                                                \
            TABLE_INDEX(DIVIDE);                                                             \
            put_entry(y + i * ysize, ytab, x, ysize);                                        \
            if (g) put_entry(g + i * gsize, gtab, x, gsize);                                 \
        }                                                                                    \
    }
int64_t pnn_table(const int64_t *z, int64_t count, int64_t shift, int64_t divisor, int64_t low,
                  int64_t high, const void *ytab_, int64_t ysize, const void *gtab_,
                  int64_t gsize, void *y_, void *g_)
{
    const char *ytab = ytab_, *gtab = gtab_;
    char *y = y_, *g = g_;
    if (count < 0 || shift < 0 || shift > 62 || divisor < 1 || low > high) return LBAD;
    for (int64_t s = 0; s < 2; s++) {
        const int64_t size = s ? gsize : ysize;
        if (size != 1 && size != 2 && size != 4 && size != 8) return LBAD;
    }
    if (divisor == 1) {
        TABLE_LOOP((void)0)
    } else if (!(divisor & (divisor - 1))) {
        const int64_t bits = __builtin_ctzll((unsigned long long)divisor);
        TABLE_LOOP(x = shr_trunc(x, bits))
    } else {
        TABLE_LOOP(x /= divisor)
    }
    return 0;
}

/*
 * out[i] = e[i] / g[i], truncating, for g of `code` (signed). A power of two is a shift;
 * any other divisor larger than |e| gives 0 (an activation's "no slope" INT32_MAX); the
 * rest divide. Returns ZERO_DIVISOR (out incomplete) if some g is not positive: the
 * caller's reference raises then.
 */
#define DIVIDE_LOOP(GT)                                                                      \
    do {                                                                                     \
        const GT *gs = g;                                                                    \
        for (int64_t i = 0; i < count; i++) {                                                \
            const int64_t d = gs[i], a = e[i];                                               \
            if (d <= 0) return ZERO_DIVISOR;                                                 \
            if (!(d & (d - 1)))                                                              \
                out[i] = shr_trunc(a, __builtin_ctzll((unsigned long long)d));               \
            else if (a > -d && a < d)                                                        \
                out[i] = 0;                                                                  \
            else                                                                             \
                out[i] = a / d;                                                              \
        }                                                                                    \
    } while (0)
int64_t pnn_divide(const int64_t *e, const void *g, int64_t code, int64_t count, int64_t *out)
{
    switch (code) {
    case LCODE_I8: DIVIDE_LOOP(int8_t); break;
    case LCODE_I16: DIVIDE_LOOP(int16_t); break;
    case LCODE_I32: DIVIDE_LOOP(int32_t); break;
    case LCODE_I64: DIVIDE_LOOP(int64_t); break;
    default: return LBAD;
    }
    return 0;
}

/* Four element strides of a (n, c, y, x) array. */
typedef struct {
    int64_t n, c, y, x;
} strides4;

static inline int64_t at4(const strides4 *s, int64_t n, int64_t c, int64_t y, int64_t x)
{
    return n * s->n + c * s->c + y * s->y + x * s->x;
}

/*
 * Max pooling of non-overlapping size x size windows of a (n, c, h, w) of `code`: y (n, c,
 * h / size, w / size) of the same type, and where (uint8) the row-major offset of the
 * first maximum of each window. Any strides (in elements); channels innermost in the
 * loops, the layout of a convolution's output.
 */
#define POOL_LOOP(T)                                                                         \
    do {                                                                                     \
        const T *src = a;                                                                    \
        T *dst = y;                                                                          \
        if (sa->c == 1 && sy->c == 1 && sw->c == 1) { /* channels last: runs of c */          \
            for (int64_t i = 0; i < n; i++)                                                  \
                for (int64_t oy = 0; oy < ho; oy++)                                          \
                    for (int64_t ox = 0; ox < wo; ox++) {                                    \
                        const T *win = src + at4(sa, i, 0, oy * size, ox * size);            \
                        T *best = dst + at4(sy, i, 0, oy, ox);                               \
                        uint8_t *first = where + at4(sw, i, 0, oy, ox);                      \
                        for (int64_t ch = 0; ch < c; ch++) best[ch] = win[ch], first[ch] = 0; \
                        for (int64_t q = 1; q < size * size; q++) {                          \
                            const T *v = win + dy[q] * sa->y + dx[q] * sa->x;                \
                            for (int64_t ch = 0; ch < c; ch++) {                             \
                                const int more = v[ch] > best[ch];                           \
                                best[ch] = more ? v[ch] : best[ch];                          \
                                first[ch] = more ? (uint8_t)q : first[ch];                   \
                            }                                                                \
                        }                                                                    \
                    }                                                                        \
            break;                                                                           \
        }                                                                                    \
        for (int64_t i = 0; i < n; i++)                                                      \
            for (int64_t oy = 0; oy < ho; oy++)                                              \
                for (int64_t ox = 0; ox < wo; ox++)                                          \
                    for (int64_t ch = 0; ch < c; ch++) {                                     \
                        const T *win = src + at4(sa, i, ch, oy * size, ox * size);           \
                        T best = win[0];                                                     \
                        int64_t first = 0;                                                   \
                        for (int64_t ky = 0; ky < size; ky++)                                \
                            for (int64_t kx = 0; kx < size; kx++) {                          \
                                const T v = win[ky * sa->y + kx * sa->x];                    \
                                if (v > best) best = v, first = ky * size + kx;              \
                            }                                                                \
                        dst[at4(sy, i, ch, oy, ox)] = best;                                  \
                        where[at4(sw, i, ch, oy, ox)] = (uint8_t)first;                      \
                    }                                                                        \
    } while (0)
int64_t pnn_maxpool(const void *a, int64_t code, const strides4 *sa, int64_t n, int64_t c,
                    int64_t h, int64_t w, int64_t size, void *y, const strides4 *sy,
                    uint8_t *where, const strides4 *sw)
{
    if (size < 1 || size * size > 256 || n < 0 || c < 0) return LBAD;
    const int64_t ho = h / size, wo = w / size;
    int64_t dy[256], dx[256]; /* a window offset's row and column, without dividing */
    for (int64_t q = 0; q < size * size; q++) dy[q] = q / size, dx[q] = q % size;
    switch (code) {
    case LCODE_I8: POOL_LOOP(int8_t); break;
    case LCODE_I16: POOL_LOOP(int16_t); break;
    case LCODE_I32: POOL_LOOP(int32_t); break;
    case LCODE_I64: POOL_LOOP(int64_t); break;
    case LCODE_U8: POOL_LOOP(uint8_t); break;
    default: return LBAD;
    }
    return 0;
}

/*
 * Max pooling backward: out (n, c, h, w, int64) is zero but at each window's first maximum,
 * which gets the window's delta (int64); a border no window covers stays zero.
 */
int64_t pnn_maxpool_backward(const int64_t *delta, const strides4 *sd, const uint8_t *where,
                             const strides4 *sw, int64_t n, int64_t c, int64_t h, int64_t w,
                             int64_t size, int64_t *out, const strides4 *so)
{
    if (size < 1 || size * size > 256 || n < 0 || c < 0) return LBAD;
    const int64_t ho = h / size, wo = w / size;
    int64_t dy[256], dx[256]; /* a window offset's row and column, without dividing */
    for (int64_t q = 0; q < size * size; q++) dy[q] = q / size, dx[q] = q % size;
    if (so->c == 1 && so->x == c && so->y == w * c && so->n == h * w * c)
        memset(out, 0, sizeof(int64_t) * (size_t)(n * h * w * c)); /* channels last, dense */
    else
        for (int64_t i = 0; i < n; i++)
            for (int64_t yy = 0; yy < h; yy++)
                for (int64_t xx = 0; xx < w; xx++)
                    for (int64_t ch = 0; ch < c; ch++) out[at4(so, i, ch, yy, xx)] = 0;
    if (sd->c == 1 && sw->c == 1 && so->c == 1) { /* channels last: runs of c */
        for (int64_t i = 0; i < n; i++)
            for (int64_t oy = 0; oy < ho; oy++)
                for (int64_t ox = 0; ox < wo; ox++) {
                    const int64_t *d = delta + at4(sd, i, 0, oy, ox);
                    const uint8_t *q = where + at4(sw, i, 0, oy, ox);
                    int64_t *o = out + at4(so, i, 0, oy * size, ox * size);
                    for (int64_t ch = 0; ch < c; ch++)
                        o[dy[q[ch]] * so->y + dx[q[ch]] * so->x + ch] = d[ch];
                }
        return 0;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t oy = 0; oy < ho; oy++)
            for (int64_t ox = 0; ox < wo; ox++)
                for (int64_t ch = 0; ch < c; ch++) {
                    const int64_t q = where[at4(sw, i, ch, oy, ox)];
                    out[at4(so, i, ch, oy * size + dy[q], ox * size + dx[q])] =
                        delta[at4(sd, i, ch, oy, ox)];
                }
    return 0;
}

/*
 * Unsigned 64-bit division by an invariant d >= 1 without a divide instruction per value
 * (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994,
 * figure 4.1): for 2**(l-1) < d < 2**l, magic = floor(2**64 * (2**l - d) / d) + 1 and
 * q = (t + ((n - t) >> 1)) >> (l - 1) with t = (magic * n) >> 64 is floor(n / d) for every
 * n < 2**64. A power of two is a shift (l = log2 d; magic unused).
 */
typedef struct {
    uint64_t magic;
    int64_t l, pow2;
} udivisor;

static udivisor udivisor_of(uint64_t d)
{
    udivisor u = {0, 0, !(d & (d - 1))};
    while (((uint64_t)1 << u.l) < d && u.l < 63) u.l++;
    if (u.pow2) return u;                          /* d = 2**l */
    if (((uint64_t)1 << u.l) < d) u.l = 64;        /* d > 2**63 */
    const unsigned __int128 top = (unsigned __int128)(((unsigned __int128)1 << u.l) - d) << 64;
    u.magic = (uint64_t)(top / d) + 1;
    return u;
}

static inline uint64_t udiv(uint64_t n, const udivisor *u)
{
    if (u->pow2) return n >> u->l;
    const uint64_t t = (uint64_t)(((unsigned __int128)u->magic * n) >> 64);
    return (t + ((n - t) >> 1)) >> (u->l - 1);
}

/*
 * The momentum step of pocketnn.train.momentum.MomentumSGD, element by element:
 *   v' = v - v / 2**m + value                      (new velocity; / truncating)
 *   q  = v' / divisor, truncating (draws NULL) or stochastic: floor(v' / divisor), plus 1
 *        when draws[i] < v' mod divisor (pocketnn.core.arith.stochastic_div_)
 *   p' = clamp(param - q, -clamp, clamp)
 * param of `code`; the caller has checked that v' fits int64.
 */
#define MOMENTUM_LOOP(PT, DRAW)                                                              \
    do {                                                                                     \
        const PT *p = param;                                                                 \
        for (int64_t i = 0; i < count; i++) {                                                \
            const int64_t v = velocity[i];                                                   \
            const int64_t nv = v - shr_trunc(v, m) + value[i];                               \
            new_velocity[i] = nv;                                                            \
            /* C's truncated quotient by the magic number, and the remainder (branchless: */ \
            /* signs are unpredictable) */                                                   \
            const uint64_t neg = (uint64_t)(nv >> 63), un = ((uint64_t)nv ^ neg) - neg;      \
            const uint64_t uq = (udiv(un, &ud) ^ neg) - neg;                                 \
            int64_t q = (int64_t)uq;                                                         \
            DRAW;                                                                            \
            const int64_t np = (int64_t)((uint64_t)p[i] - (uint64_t)q); /* wraps as numpy */ \
            new_param[i] = np < -clamp ? -clamp : np > clamp ? clamp : np;                   \
        }                                                                                    \
    } while (0)
int64_t pnn_momentum(int64_t count, const int64_t *velocity, const int64_t *value,
                     const void *param, int64_t code, const int64_t *draws, int64_t m,
                     int64_t divisor, int64_t clamp, int64_t *new_velocity, int64_t *new_param)
{
    if (count < 0 || m < 0 || m > 62 || divisor < 1 || clamp < 0) return LBAD;
    const udivisor ud = udivisor_of((uint64_t)divisor);
/* floor(nv / d), plus 1 when the draw is below the remainder in [0, d) */
#define STOCHASTIC                                                                           \
    const uint64_t r = (uint64_t)nv - uq * (uint64_t)divisor;                                \
    const uint64_t below = (uint64_t)((int64_t)r >> 63);                                     \
    q += (int64_t)below + (draws[i] < (int64_t)(r + ((uint64_t)divisor & below)))
    if (code != LCODE_I16 && code != LCODE_I32) return LBAD;
    if (draws && code == LCODE_I16) MOMENTUM_LOOP(int16_t, STOCHASTIC);
    else if (draws) MOMENTUM_LOOP(int32_t, STOCHASTIC);
    else if (code == LCODE_I16) MOMENTUM_LOOP(int16_t, (void)0);
    else MOMENTUM_LOOP(int32_t, (void)0);
    return 0;
}
