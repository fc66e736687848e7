/*
 * The "compiled" engine of pocketnn: whole DFA training runs and test passes in C that
 * computes with integer instructions only (tests/test_compiled.py disassembles the built
 * library and finds no floating-point instruction).
 *
 * Every value is the one the layered Python step computes:
 *  - products are exact. A product is summed in int32 vector lanes only where a bound
 *    proves that no partial sum can leave int32 (for a forward product, blocks of at most
 *    INT32_MAX / (max|a| * max|W|) terms, each block then added in int64; for a gradient,
 *    max|a| * max_j sum_i |delta_ij| <= INT32_MAX, which also proves its int32 check
 *    passes), else in int64 (the Python side only calls in where int64 provably holds every
 *    sum). Integer addition is associative, so the order of the terms does not matter;
 *  - a division by a positive constant d (activation pre-scaling, 1/g, lr_inv) multiplies
 *    by the Granlund-Montgomery magic number of pocketnn.engines.dfa_plan.magic: exact C
 *    truncation for every dividend of magnitude <= 2**31, which every dividend here is
 *    (it has passed an int32 check, or is an activation output or a bounded error);
 *  - the int32 checks run in the layered step's order and report the same value (the
 *    maximum if it is too large, else the minimum); under the "wrap" policy values are
 *    wrapped to int32 instead, where the layered step wraps them. A step writes no
 *    parameter before all its checks have passed;
 *  - stochastic rounding reads draws made by numpy in the optimizer's order.
 *
 * Threads split work whose elements are computed independently (the columns of the first
 * layer, the rows of a test pass): every element is computed by the same instructions
 * whatever the thread count, so the results are identical for any number of threads.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PNN_ABI 1
#define MAX_LAYERS 16
#define MAX_THREADS 8
#define EDGE ((int64_t)1 << 31)
#define I32_MAX ((int64_t)2147483647)
#define I32_MIN (-I32_MAX - 1)
#define TILE 16
#define SLACK 16 /* spare entries after a compacted row: whole vectors are stored */
#define OK (-1)
#define OUT_OF_MEMORY (-2)
#define SITE(layer, op) (4 * (layer) + (op))

enum { OP_FORWARD, OP_FEEDBACK, OP_GRADIENT, OP_COLSUM };
enum { X_U8, X_I8, X_U16, X_I16 };

typedef int32_t v16i __attribute__((vector_size(64)));
typedef int16_t v16h __attribute__((vector_size(32)));

/* A positive divisor d and its magic numbers (pocketnn.engines.dfa_plan.magic). */
typedef struct {
    int64_t d, m, s, edge;
} divisor;

/* The model, as pocketnn.engines.compiled.plan.Net lays it out (every field 8 bytes). */
typedef struct {
    int64_t n_layers, n_classes, wrap, wide; /* wide: int32 parameters, else int16 */
    int64_t dims[MAX_LAYERS + 1];
    int64_t clamp[MAX_LAYERS];
    int64_t spec[MAX_LAYERS][5]; /* pre-scaling magic (m, s, edge), table low, high */
    const int64_t *tables;       /* n_layers x 4 x table_width: y, then 1/g's magic */
    int64_t table_width;
    void *W[MAX_LAYERS]; /* n_in x n_out, row-major */
    void *b[MAX_LAYERS];
    const int32_t *B[MAX_LAYERS]; /* hidden layers' DFA feedback, n_classes x n_out */
} pnn_net;

/* One training run: batches of order[] in turn (pocketnn.engines.compiled.plan.Run). */
typedef struct {
    const void *x;
    int64_t x_code, x_stride, x_max; /* dtype, row stride in elements, largest |x| of the dtype */
    int64_t skip_zero_rows;          /* unsigned input: W1 rows of all-zero columns keep still */
    const int64_t *order;
    const int64_t *targets; /* n_classes per sample, indexed like x */
    int64_t n, batch;
    int64_t lr_inv, lr_m, lr_s, lr_edge;
    const int32_t *draws; /* NULL: truncate */
    int64_t n_draws, threads;
    /* results */
    int64_t loss, correct, steps, site, worst, draws_used;
} pnn_run;

/* ------------------------------------------------------------------ arithmetic */

static inline int64_t tdiv(int64_t n, int64_t m, int64_t s, int64_t edge)
{
    const int64_t a = n < 0 ? -n : n;
    int64_t q = ((a < EDGE ? a : EDGE - 1) * m) >> s;
    if (a == EDGE) q = edge;
    return n < 0 ? -q : q;
}

static inline int64_t wrap32(int64_t v) { return ((v - I32_MIN) & 0xFFFFFFFF) + I32_MIN; }
static inline int64_t worst_of(int64_t lo, int64_t hi) { return hi > I32_MAX ? hi : lo; }
static inline int outside(int64_t lo, int64_t hi) { return lo < I32_MIN || hi > I32_MAX; }

/* min/max of an int64 array; under wrap, values outside int32 are wrapped in place. */
static void extremes(int64_t *v, int64_t count, int wrap, int64_t *lo, int64_t *hi)
{
    int64_t a = INT64_MAX, b = INT64_MIN;
    for (int64_t t = 0; t < count; t++) {
        a = v[t] < a ? v[t] : a;
        b = v[t] > b ? v[t] : b;
    }
    if (wrap && outside(a, b)) {
        for (int64_t t = 0; t < count; t++) v[t] = wrap32(v[t]);
    }
    *lo = a;
    *hi = b;
}

static inline v16i load16h(const int16_t *p)
{
    v16h h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, v16i);
}

static inline v16i load16i(const int32_t *p)
{
    v16i v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void add16(int64_t *z, v16i acc)
{
    for (int t = 0; t < TILE; t++) z[t] += acc[t];
}

static inline int64_t get_w(const void *w, int wide, int64_t i)
{
    return wide ? ((const int32_t *)w)[i] : ((const int16_t *)w)[i];
}

/* ------------------------------------------------------------------ products */

#if defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define PAIRED_LANES 1

/*
 * A sparse row (entries k, values v) ready for the paired lanes: the element offsets of its
 * rows in a matrix of `stride` columns, and its values packed two by two as int16 halves
 * (an odd count is padded with a zero value on a repeated row). Returns the pair count.
 */
static int64_t prepare_pairs(const int32_t *k, const int32_t *v, int64_t count, int64_t stride,
                             int32_t *off, int16_t *pairs)
{
    const __m512i step = _mm512_set1_epi32((int32_t)stride);
    int64_t t = 0;
    /* 16 entries at a time: offsets by one multiply, values narrowed to int16 (they fit):
     * as 32-bit words, consecutive int16 values are exactly the packed pairs */
    for (; t + 16 <= count; t += 16) {
        _mm512_storeu_si512(off + t, _mm512_mullo_epi32(_mm512_loadu_si512(k + t), step));
        _mm256_storeu_si256((__m256i *)(pairs + t),
                            _mm512_cvtepi32_epi16(_mm512_loadu_si512(v + t)));
    }
    for (; t < count; t++) {
        off[t] = k[t] * (int32_t)stride;
        pairs[t] = (int16_t)v[t];
    }
    if (count & 1) {
        off[count] = off[count - 1];
        pairs[count] = 0;
    }
    return (count + 1) / 2;
}

/* acc + a.lo * b.lo + a.hi * b.hi in every 32-bit lane: one vpdpwssd where VNNI exists. */
#ifdef __AVX512VNNI__
#define MADD_FN(NAME, V, P) \
    static inline V NAME(V acc, V a, V b) { return P##_dpwssd_epi32(acc, a, b); }
#else
#define MADD_FN(NAME, V, P) \
    static inline V NAME(V acc, V a, V b) { return P##_add_epi32(acc, P##_madd_epi16(a, b)); }
#endif
MADD_FN(madd, __m512i, _mm512)
MADD_FN(madd256, __m256i, _mm256)

/* One pair of a prepared row into sums lo[q], hi[q] (vectors V, intrinsics prefix P). */
#define PAIR_STEP(V, P, MADD, q, p)                                                          \
    do {                                                                                     \
        const V a = P##_maskz_loadu_epi16(mask, base + off[2 * (p)]);                        \
        const V b = P##_maskz_loadu_epi16(mask, base + off[2 * (p) + 1]);                    \
        int32_t word; /* the pair's two int16 values as one 32-bit lane value */              \
        memcpy(&word, pairs + 2 * (p), sizeof word);                                         \
        const V vv = P##_set1_epi32(word);                                                   \
        lo[q] = MADD(lo[q], P##_unpacklo_epi16(a, b), vv);                                   \
        hi[q] = MADD(hi[q], P##_unpackhi_epi16(a, b), vv);                                   \
    } while (0)

/* The pairs [p0, p1) into lo[0], hi[0]: four independent sums (each a partial sum of the
 * terms, so the caller's bound holds for each), so the multiply-adds of consecutive pairs
 * do not wait for each other. */
#define PAIRED_LOOP(V, P, MADD)                                                              \
    V lo[4], hi[4];                                                                          \
    for (int q = 0; q < 4; q++) lo[q] = hi[q] = (V){0};                                      \
    int64_t p = p0;                                                                          \
    for (; p + 3 < p1; p += 4) {                                                             \
        PAIR_STEP(V, P, MADD, 0, p);                                                         \
        PAIR_STEP(V, P, MADD, 1, p + 1);                                                     \
        PAIR_STEP(V, P, MADD, 2, p + 2);                                                     \
        PAIR_STEP(V, P, MADD, 3, p + 3);                                                     \
    }                                                                                        \
    for (; p < p1; p++) PAIR_STEP(V, P, MADD, 0, p);                                         \
    lo[0] = P##_add_epi32(P##_add_epi32(lo[0], lo[1]), P##_add_epi32(lo[2], lo[3]));         \
    hi[0] = P##_add_epi32(P##_add_epi32(hi[0], hi[1]), P##_add_epi32(hi[2], hi[3]))

/*
 * sum_t v[t] * R[k[t]][j] over the pairs [p0, p1) of a prepared row (prepare_pairs: the
 * element offsets of its rows R[k[t]] from base, and its values two by two), for j < 32
 * (columns outside `mask` are zero), v within int16: two terms per 32-bit lane and
 * instruction (vpmaddwd / vpdpwssd, whose pair sums stay below 2**31 as no two factors
 * are both -32768: weights are clamped to +-32767, and deltas are used here only when
 * |delta| <= 32767). The caller proves that int32 lanes hold the sum. Columns 0-15 go to
 * *low, 16-31 to *high.
 */
static inline void paired_sums(const int16_t *base, const int32_t *off, const int16_t *pairs,
                               int64_t p0, int64_t p1, __mmask32 mask, __m512i *low,
                               __m512i *high)
{
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i second =
        _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    PAIRED_LOOP(__m512i, _mm512, madd);
    *low = _mm512_permutex2var_epi32(lo[0], first, hi[0]);
    *high = _mm512_permutex2var_epi32(lo[0], second, hi[0]);
}

/* paired_sums for at most 16 columns (in 256-bit lanes: half the work of a 32-column tile). */
static inline __m512i paired_sums16(const int16_t *base, const int32_t *off,
                                    const int16_t *pairs, int64_t p0, int64_t p1,
                                    __mmask16 mask)
{
    const __m512i order = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    PAIRED_LOOP(__m256i, _mm256, madd256);
    return _mm512_permutex2var_epi32(_mm512_castsi256_si512(lo[0]), order,
                                     _mm512_castsi256_si512(hi[0]));
}

/* z[j] += s[j] (int64) for the columns j of `mask`. */
static inline void add_lanes(int64_t *z, __m512i s, __mmask16 mask)
{
    const __m512i a = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(s));
    const __m512i b = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(s, 1));
    const __mmask8 ma = (__mmask8)mask, mb = (__mmask8)(mask >> 8);
    _mm512_mask_storeu_epi64(z, ma, _mm512_add_epi64(_mm512_maskz_loadu_epi64(ma, z), a));
    _mm512_mask_storeu_epi64(z + 8, mb, _mm512_add_epi64(_mm512_maskz_loadu_epi64(mb, z + 8), b));
}

/* The forward product of sparse_times for int16 weights and int16-range inputs, from a
 * prepared row of n_pairs pairs, at most block_pairs pairs summed per int32 lane. */
static void paired_forward(const int16_t *W, const int32_t *off, const int16_t *pairs,
                           int64_t n_pairs, int64_t block_pairs, int64_t j0, int64_t j1,
                           int64_t *z)
{
    for (int64_t j = j0; j < j1; j += 32) {
        const int64_t width = j1 - j < 32 ? j1 - j : 32;
        const __mmask32 mask = width == 32 ? 0xFFFFFFFFu : (1u << width) - 1;
        for (int64_t p0 = 0; p0 < n_pairs; p0 += block_pairs) {
            const int64_t p1 = p0 + block_pairs < n_pairs ? p0 + block_pairs : n_pairs;
            if (width <= 16) {
                add_lanes(z + j, paired_sums16(W + j, off, pairs, p0, p1, (__mmask16)mask),
                          (__mmask16)mask);
                continue;
            }
            __m512i low, high;
            paired_sums(W + j, off, pairs, p0, p1, mask, &low, &high);
            add_lanes(z + j, low, (__mmask16)mask);
            add_lanes(z + j + 16, high, (__mmask16)(mask >> 16));
        }
    }
}

/*
 * C's n / d in 16 int32 lanes (|n| <= 2**31), with each lane's magic numbers: m < 2**32
 * (as unsigned 32-bit lanes), s and edge. The products |n| * m of even and odd lanes are
 * formed in 64-bit lanes (vpmuludq), shifted right by s, and put back together.
 */
static inline __m512i tdiv_lanes(__m512i n, __m512i m, __m512i s, __m512i edge)
{
    const __m512i low32 = _mm512_set1_epi64(0xFFFFFFFF);
    const __m512i a = _mm512_abs_epi32(n); /* |INT32_MIN| reads as 2**31 unsigned */
    const __m512i even = _mm512_srlv_epi64(_mm512_mul_epu32(a, m), _mm512_and_si512(s, low32));
    const __m512i odd = _mm512_srlv_epi64(
        _mm512_mul_epu32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(m, 32)),
        _mm512_srli_epi64(s, 32));
    __m512i q = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    q = _mm512_mask_mov_epi32(q, _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32(INT32_MIN)), edge);
    return _mm512_mask_sub_epi32(q, _mm512_movepi32_mask(n), _mm512_setzero_si512(), q);
}

/* 16 int64 values (within int32 here) as int32 lanes. */
static inline __m512i narrow_lanes(const int64_t *z, __mmask16 mask)
{
    const __m256i a = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)mask, z));
    const __m256i b = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)(mask >> 8), z + 8));
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

/* 16 entries of an int64 table (values below 2**32) at int32 indices, as 32-bit lanes. */
static inline __m512i gather_lanes(const int64_t *table, __m512i index)
{
    const __m256i a = _mm512_cvtepi64_epi32(
        _mm512_i32gather_epi64(_mm512_castsi512_si256(index), (const long long *)table, 8));
    const __m256i b = _mm512_cvtepi64_epi32(
        _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(index, 1), (const long long *)table, 8));
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

/*
 * p[j] = clamp(p[j] - round(g[j] / lr)) for the 16 int16 parameters of `mask`, g int32:
 * the quotient by 32x32->64-bit multiplies (the magic m < 2**32), truncating or
 * stochastic, saturated at +-2 * clamp (which cannot change the clamped result).
 */
static inline void descend_lanes(int16_t *p, __m512i g, __mmask16 mask, divisor lr, int32_t clamp,
                                 const int32_t *draws)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512i q = tdiv_lanes(g, _mm512_set1_epi32((int32_t)(uint32_t)lr.m),
                           _mm512_set1_epi32((int32_t)lr.s), _mm512_set1_epi32((int32_t)lr.edge));
    if (draws) { /* floor, then one more when the draw is below the remainder */
        const __m512i d = _mm512_set1_epi32((int32_t)lr.d);
        __m512i rem = _mm512_sub_epi32(g, _mm512_mullo_epi32(q, d));
        const __mmask16 below = _mm512_cmplt_epi32_mask(rem, zero);
        q = _mm512_mask_sub_epi32(q, below, q, _mm512_set1_epi32(1));
        rem = _mm512_mask_add_epi32(rem, below, rem, d);
        const __m512i u = _mm512_maskz_loadu_epi32(mask, draws);
        q = _mm512_mask_add_epi32(q, _mm512_cmplt_epi32_mask(u, rem), q, _mm512_set1_epi32(1));
    }
    const __m512i limit = _mm512_set1_epi32(2 * clamp), c = _mm512_set1_epi32(clamp);
    q = _mm512_max_epi32(_mm512_min_epi32(q, limit), _mm512_sub_epi32(zero, limit));
    const __m512i w = _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(mask, p));
    __m512i v = _mm512_sub_epi32(w, q);
    v = _mm512_max_epi32(_mm512_min_epi32(v, c), _mm512_sub_epi32(zero, c));
    _mm256_mask_storeu_epi16(p, mask, _mm512_cvtepi32_epi16(v));
}

/* update_rows' paired path: a row's gradient from int16 deltas (a prepared row of the
 * samples' delta rows), then its descent. */
static void paired_update(const int16_t *delta16, const int32_t *off, const int16_t *pairs,
                          int64_t n_pairs, int16_t *w, int64_t j0, int64_t j1, divisor lr,
                          int32_t clamp, const int32_t *draws)
{
    for (int64_t j = j0; j < j1; j += 32) {
        const int64_t width = j1 - j < 32 ? j1 - j : 32;
        const __mmask32 mask = width == 32 ? 0xFFFFFFFFu : (1u << width) - 1;
        if (width <= 16) {
            descend_lanes(w + j, paired_sums16(delta16 + j, off, pairs, 0, n_pairs, 0xFFFF),
                          (__mmask16)mask, lr, clamp, draws ? draws + j : NULL);
            continue;
        }
        __m512i low, high;
        paired_sums(delta16 + j, off, pairs, 0, n_pairs, 0xFFFFFFFFu, &low, &high);
        descend_lanes(w + j, low, (__mmask16)mask, lr, clamp, draws ? draws + j : NULL);
        if (width > 16)
            descend_lanes(w + j + 16, high, (__mmask16)(mask >> 16), lr, clamp,
                          draws ? draws + j + 16 : NULL);
    }
}
#endif

/* z[j] += acc[j - from] for the columns j >= skip of a tile starting at `from`. */
static inline void add_tile(int64_t *z, int64_t from, int64_t skip, v16i acc)
{
    for (int t = 0; t < TILE; t++) {
        if (from + t >= skip) z[from + t] += acc[t];
    }
}

/*
 * z[j] += sum_t v[t] * W[k[t]][j] for j in [j0, j1): a sparse row times a dense matrix.
 * With int16 weights and block > 0, in int32 lanes summing at most `block` terms each.
 * A last partial tile is computed over the 16 columns ending at j1 (inside the row), and
 * only its columns not yet done are added.
 */
static void sparse_times(const int32_t *k, const int32_t *v, int64_t count, int64_t block,
                         const void *W, int wide, int64_t H, int64_t j0, int64_t j1, int64_t *z,
                         int small_v, int32_t *off, int16_t *pairs)
{
    int64_t j = j0;
#ifdef PAIRED_LANES
    if (!wide && block > 1 && small_v && off) { /* scratch for the prepared row given */
        const int64_t n_pairs = prepare_pairs(k, v, count, H, off, pairs);
        paired_forward(W, off, pairs, n_pairs, block / 2, j0, j1, z);
        return;
    }
#else
    (void)small_v;
    (void)off;
    (void)pairs;
#endif
    if (!wide && block > 0 && j1 - j0 >= TILE) {
        const int16_t *w = W;
        for (; j + 4 * TILE <= j1; j += 4 * TILE) {
            for (int64_t t0 = 0; t0 < count; t0 += block) {
                const int64_t t1 = t0 + block < count ? t0 + block : count;
                v16i a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                for (int64_t t = t0; t < t1; t++) {
                    const int16_t *row = w + (int64_t)k[t] * H + j;
                    const int32_t s = v[t];
                    a0 += s * load16h(row);
                    a1 += s * load16h(row + TILE);
                    a2 += s * load16h(row + 2 * TILE);
                    a3 += s * load16h(row + 3 * TILE);
                }
                add_tile(z, j, j, a0);
                add_tile(z, j + TILE, j, a1);
                add_tile(z, j + 2 * TILE, j, a2);
                add_tile(z, j + 3 * TILE, j, a3);
            }
        }
        while (j < j1) {
            const int64_t from = j + TILE <= j1 ? j : j1 - TILE;
            for (int64_t t0 = 0; t0 < count; t0 += block) {
                const int64_t t1 = t0 + block < count ? t0 + block : count;
                v16i a0 = {0};
                for (int64_t t = t0; t < t1; t++)
                    a0 += v[t] * load16h(w + (int64_t)k[t] * H + from);
                add_tile(z, from, j, a0);
            }
            j = from + TILE;
        }
        return;
    }
    for (; j < j1; j++) {
        int64_t sum = 0;
        for (int64_t t = 0; t < count; t++)
            sum += (int64_t)v[t] * get_w(W, wide, (int64_t)k[t] * H + j);
        z[j] += sum;
    }
}

/*
 * sparse_times for n sparse rows (row i's entries at k + offset[i], count[i] of them) into
 * z rows of stride zs. With the paired lanes, tile by tile and then row by row, so each
 * tile of W stays in the nearest cache while every row uses it.
 */
static void rows_times(const int32_t *k, const int32_t *v, const int64_t *offset,
                       const int64_t *count, int64_t n, int64_t block, const void *W, int wide,
                       int64_t H, int64_t j0, int64_t j1, int64_t *z, int64_t zs, int small_v,
                       int32_t *off, int16_t *pairs, int64_t *n_pairs)
{
#ifdef PAIRED_LANES
    if (!wide && block > 1 && small_v) {
        for (int64_t i = 0; i < n; i++)
            n_pairs[i] = prepare_pairs(k + offset[i], v + offset[i], count[i], H, off + offset[i],
                                       pairs + offset[i]);
        for (int64_t j = j0; j < j1; j += 32) {
            const int64_t end = j + 32 < j1 ? j + 32 : j1;
            for (int64_t i = 0; i < n; i++)
                paired_forward(W, off + offset[i], pairs + offset[i], n_pairs[i], block / 2, j,
                               end, z + i * zs);
        }
        return;
    }
#else
    (void)off;
    (void)pairs;
    (void)n_pairs;
#endif
    for (int64_t i = 0; i < n; i++)
        sparse_times(k + offset[i], v + offset[i], count[i], block, W, wide, H, j0, j1,
                     z + i * zs, small_v, NULL, NULL);
}

/* The non-zero entries of a row: indices into k, values into v; returns their count. */
static int64_t compact_row(const void *x, int64_t code, int64_t n, int32_t *k, int32_t *v)
{
    int64_t c = 0, i = 0;
    switch (code) {
    case X_U8: {
        const uint8_t *r = x;
#ifdef PAIRED_LANES
        const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (; i + 16 <= n; i += 16) {
            const __m128i b = _mm_loadu_si128((const __m128i *)(r + i));
            const __mmask16 nz = _mm_test_epi8_mask(b, b);
            if (!nz) continue;
            /* compress in registers, store whole vectors: the buffers have 16 spare slots */
            _mm512_storeu_si512(v + c, _mm512_maskz_compress_epi32(nz, _mm512_cvtepu8_epi32(b)));
            _mm512_storeu_si512(
                k + c, _mm512_maskz_compress_epi32(nz, _mm512_add_epi32(iota, _mm512_set1_epi32((int32_t)i))));
            c += __builtin_popcount(nz);
        }
#endif
        for (; i + 8 <= n; i += 8) {
            uint64_t word;
            memcpy(&word, r + i, 8);
            if (!word) continue;
            for (int64_t t = i; t < i + 8; t++) {
                k[c] = (int32_t)t;
                v[c] = r[t];
                c += r[t] != 0;
            }
        }
        for (; i < n; i++) {
            k[c] = (int32_t)i;
            v[c] = r[i];
            c += r[i] != 0;
        }
        return c;
    }
    case X_I8:
        for (; i < n; i++) {
            k[c] = (int32_t)i;
            v[c] = ((const int8_t *)x)[i];
            c += v[c] != 0;
        }
        return c;
    case X_U16:
        for (; i < n; i++) {
            k[c] = (int32_t)i;
            v[c] = ((const uint16_t *)x)[i];
            c += v[c] != 0;
        }
        return c;
    default:
        for (; i < n; i++) {
            k[c] = (int32_t)i;
            v[c] = ((const int16_t *)x)[i];
            c += v[c] != 0;
        }
        return c;
    }
}

/* The non-zero entries of an int64 row whose values fit int32 (the error e). */
static int64_t compact_wide(const int64_t *a, int64_t n, int32_t *k, int32_t *v)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) {
        k[c] = (int32_t)i;
        v[c] = (int32_t)a[i];
        c += a[i] != 0;
    }
    return c;
}

/* The non-zero entries of a dense int32 row (a hidden layer's output). */
static int64_t compact_dense(const int32_t *a, int64_t n, int32_t *k, int32_t *v)
{
    int64_t c = 0, i = 0;
#ifdef PAIRED_LANES
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; i + 16 <= n; i += 16) {
        const __m512i w = _mm512_loadu_si512(a + i);
        const __mmask16 nz = _mm512_test_epi32_mask(w, w);
        _mm512_storeu_si512(v + c, _mm512_maskz_compress_epi32(nz, w));
        _mm512_storeu_si512(
            k + c, _mm512_maskz_compress_epi32(nz, _mm512_add_epi32(iota, _mm512_set1_epi32((int32_t)i))));
        c += __builtin_popcount(nz);
    }
#endif
    for (; i < n; i++) {
        k[c] = (int32_t)i;
        v[c] = a[i];
        c += a[i] != 0;
    }
    return c;
}

static int64_t x_size(int64_t code) { return code == X_U8 || code == X_I8 ? 1 : 2; }

/* ------------------------------------------------------------------ activations */

/* y, and the table index of 1/g, of pre-activations z (already in int32: checked or wrapped). */
static void activate(const pnn_net *net, int l, const int64_t *z, int32_t *y, int32_t *gi,
                     int64_t count)
{
    const int64_t *sp = net->spec[l];
    const int64_t *ty = net->tables + (int64_t)l * 4 * net->table_width;
    int64_t t = 0;
#ifdef PAIRED_LANES
    const __m512i m = _mm512_set1_epi32((int32_t)(uint32_t)sp[0]);
    const __m512i s = _mm512_set1_epi32((int32_t)sp[1]), edge = _mm512_set1_epi32((int32_t)sp[2]);
    const __m512i low = _mm512_set1_epi32((int32_t)sp[3]), high = _mm512_set1_epi32((int32_t)sp[4]);
    for (; t < count; t += 16) {
        const __mmask16 mask = count - t >= 16 ? 0xFFFF : (__mmask16)((1u << (count - t)) - 1);
        /* z within int32 (checked or wrapped), else the step fails: saturating is safe */
        const __m256i za = _mm512_cvtsepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)mask, z + t));
        const __m256i zb =
            _mm512_cvtsepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)(mask >> 8), z + t + 8));
        const __m512i zz = _mm512_inserti64x4(_mm512_castsi256_si512(za), zb, 1);
        __m512i q = tdiv_lanes(zz, m, s, edge);
        q = _mm512_sub_epi32(_mm512_min_epi32(_mm512_max_epi32(q, low), high), low);
        _mm512_mask_storeu_epi32(gi + t, mask, q);
        _mm512_mask_storeu_epi32(y + t, mask, gather_lanes(ty, _mm512_maskz_mov_epi32(mask, q)));
    }
#endif
    for (; t < count; t++) {
        int64_t q = tdiv(z[t], sp[0], sp[1], sp[2]);
        q = q < sp[3] ? sp[3] : q > sp[4] ? sp[4] : q;
        gi[t] = (int32_t)(q - sp[3]);
        y[t] = (int32_t)ty[q - sp[3]];
    }
}

/* delta = err / g (C truncation), g given by its table index. */
static void divide_by_g(const pnn_net *net, int l, const int64_t *err, const int32_t *gi,
                        int32_t *delta, int64_t count)
{
    const int64_t T = net->table_width;
    const int64_t *tm = net->tables + (int64_t)l * 4 * T + T;
    int64_t t = 0;
#ifdef PAIRED_LANES
    for (; t < count; t += 16) {
        const __mmask16 mask = count - t >= 16 ? 0xFFFF : (__mmask16)((1u << (count - t)) - 1);
        const __m512i index = _mm512_maskz_loadu_epi32(mask, gi + t);
        const __m512i q = tdiv_lanes(narrow_lanes(err + t, mask), gather_lanes(tm, index),
                                     gather_lanes(tm + T, index), gather_lanes(tm + 2 * T, index));
        _mm512_mask_storeu_epi32(delta + t, mask, q);
    }
#endif
    for (; t < count; t++) {
        const int32_t g = gi[t];
        delta[t] = (int32_t)tdiv(err[t], tm[g], tm[T + g], tm[2 * T + g]);
    }
}

/* ------------------------------------------------------------------ updates */

/* p[t] = clamp(p[t] - round(g[t] / d)) for |g[t]| <= 2**31: truncating, or stochastic. */
static void descend(void *p, int wide, const int64_t *g, int64_t count, divisor lr,
                    int64_t clamp, const int32_t *draws)
{
    int16_t *p16 = p;
    int32_t *p32 = p;
    for (int64_t t = 0; t < count; t++) {
        int64_t q = tdiv(g[t], lr.m, lr.s, lr.edge);
        if (draws) {
            int64_t rem = g[t] - q * lr.d;
            if (rem < 0) {
                q -= 1;
                rem += lr.d;
            }
            q += draws[t] < rem;
        }
        int64_t v = (wide ? p32[t] : p16[t]) - q;
        v = v < -clamp ? -clamp : v > clamp ? clamp : v;
        if (wide)
            p32[t] = (int32_t)v;
        else
            p16[t] = (int16_t)v;
    }
}

/*
 * The input of a layer's update, column by column: for each row r of W that can change
 * (rows[r]), the samples i with a non-zero input and their values (CSC of the batch input).
 */
typedef struct {
    int64_t n_rows;
    int32_t *rows;  /* W rows, increasing */
    int32_t *start; /* n_rows + 1 offsets into sample/value */
    int32_t *sample, *value;
    /* each row prepared for the paired lanes (prepare_pairs, offsets into the int16 deltas):
     * row r at start[r] + r, n_pairs[r] pairs */
    int32_t *off, *n_pairs;
    int16_t *pairs;
} columns;

#ifdef PAIRED_LANES
/* Prepare every row of c for the paired lanes, against delta rows of `stride`. */
static void prepare_columns(columns *c, int64_t stride)
{
    for (int64_t r = 0; r < c->n_rows; r++) {
        const int64_t s0 = c->start[r];
        c->n_pairs[r] = (int32_t)prepare_pairs(c->sample + s0, c->value + s0, c->start[r + 1] - s0,
                                               stride, c->off + s0 + r, c->pairs + s0 + r);
    }
}
#else
static void prepare_columns(columns *c, int64_t stride)
{
    (void)c;
    (void)stride;
}
#endif

/*
 * The same for int16 parameters and gradients that fit int32 (the summing lanes), in
 * 32-bit lanes but for one 32x32-bit multiply: the quotient is saturated at +-2 * clamp,
 * which cannot change the clamped result, so p - q never leaves int32.
 */
static void descend16(int16_t *restrict p, const int32_t *restrict g, int64_t count, divisor lr,
                      int32_t clamp, const int32_t *restrict draws)
{
    const uint64_t m = (uint64_t)lr.m;
    const int s = (int)lr.s;
    const int32_t edge = (int32_t)lr.edge, d = (int32_t)lr.d, limit = 2 * clamp;
    if (!draws) {
        for (int64_t t = 0; t < count; t++) {
            const int32_t gt = g[t];
            const uint32_t a = gt < 0 ? 0u - (uint32_t)gt : (uint32_t)gt;
            int32_t q = (int32_t)(((uint64_t)(a < EDGE ? a : EDGE - 1) * m) >> s);
            q = a == (uint32_t)EDGE ? edge : q;
            q = q > limit ? limit : q;
            q = gt < 0 ? -q : q;
            int32_t v = p[t] - q;
            v = v < -clamp ? -clamp : v > clamp ? clamp : v;
            p[t] = (int16_t)v;
        }
        return;
    }
    for (int64_t t = 0; t < count; t++) {
        const int64_t gt = g[t], q = tdiv(gt, lr.m, lr.s, lr.edge);
        int64_t rem = gt - q * d, f = q;
        f -= rem < 0;
        rem += rem < 0 ? d : 0;
        f += draws[t] < rem;
        f = f > limit ? limit : f < -limit ? -limit : f;
        int32_t v = p[t] - (int32_t)f;
        v = v < -clamp ? -clamp : v > clamp ? clamp : v;
        p[t] = (int16_t)v;
    }
}

/*
 * W[rows[r]][j] -= round(grad / lr) for j in [j0, j1), grad = sum_i a[i][r] * delta[i][j]
 * summed in int32 lanes (the caller proved the bound), or read from the exact gradient G
 * (rows x H, already checked). Draws of row r start at draw_base + (rows[r] or r) * H.
 */
static void update_rows(const columns *c, const int32_t *delta, const int16_t *delta16,
                        int64_t H16, const int64_t *G, void *W, int wide, int64_t H, int64_t j0,
                        int64_t j1, divisor lr, int64_t clamp, const int32_t *draws,
                        int64_t draw_base, int dense_draw_rows)
{
#ifndef PAIRED_LANES
    (void)delta16;
    (void)H16;
#endif
    int32_t g[4 * TILE];
    const int64_t size = wide ? 4 : 2;
    if (G || wide) delta16 = NULL;
    for (int64_t r = 0; r < c->n_rows; r++) {
        const int64_t row = c->rows[r];
        const int64_t s0 = c->start[r], s1 = c->start[r + 1];
        const int32_t *dr = draws ? draws + draw_base + (dense_draw_rows ? row : r) * H : NULL;
        if (G || wide) {
            int64_t sum[4 * TILE];
            for (int64_t j = j0; j < j1; j += 4 * TILE) {
                const int64_t width = j1 - j < 4 * TILE ? j1 - j : 4 * TILE;
                for (int64_t q = 0; q < width; q++) {
                    if (G) {
                        sum[q] = G[r * H + j + q];
                        continue;
                    }
                    sum[q] = 0;
                    for (int64_t s = s0; s < s1; s++)
                        sum[q] += (int64_t)c->value[s] * delta[(int64_t)c->sample[s] * H + j + q];
                }
                descend((char *)W + (row * H + j) * size, wide, sum, width, lr, clamp,
                        dr ? dr + j : NULL);
            }
            continue;
        }
        int16_t *w = (int16_t *)W + row * H;
        int64_t j = j0;
#ifdef PAIRED_LANES
        if (delta16) {
            (void)H16; /* the rows were prepared against it */
            paired_update(delta16, c->off + s0 + r, c->pairs + s0 + r, c->n_pairs[r], w, j0, j1,
                          lr, (int32_t)clamp, dr);
            continue;
        }
#endif
        for (; j + 4 * TILE <= j1; j += 4 * TILE) {
            v16i a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t s = s0; s < s1; s++) {
                const int32_t *d = delta + (int64_t)c->sample[s] * H + j;
                const int32_t v = c->value[s];
                a0 += v * load16i(d);
                a1 += v * load16i(d + TILE);
                a2 += v * load16i(d + 2 * TILE);
                a3 += v * load16i(d + 3 * TILE);
            }
            memcpy(g, &a0, sizeof a0);
            memcpy(g + TILE, &a1, sizeof a1);
            memcpy(g + 2 * TILE, &a2, sizeof a2);
            memcpy(g + 3 * TILE, &a3, sizeof a3);
            descend16(w + j, g, 4 * TILE, lr, (int32_t)clamp, dr ? dr + j : NULL);
        }
        for (; j + TILE <= j1; j += TILE) {
            v16i a0 = {0};
            for (int64_t s = s0; s < s1; s++)
                a0 += c->value[s] * load16i(delta + (int64_t)c->sample[s] * H + j);
            memcpy(g, &a0, sizeof a0);
            descend16(w + j, g, TILE, lr, (int32_t)clamp, dr ? dr + j : NULL);
        }
        for (; j < j1; j++) {
            int32_t sum = 0; /* within int32: the caller's bound */
            for (int64_t s = s0; s < s1; s++)
                sum += c->value[s] * delta[(int64_t)c->sample[s] * H + j];
            descend16(w + j, &sum, 1, lr, (int32_t)clamp, dr ? dr + j : NULL);
        }
    }
}

/* The exact gradient G = a.T @ delta on the rows of c (int64), for [j0, j1). */
static void exact_gradient(const columns *c, const int32_t *delta, int64_t H, int64_t *G)
{
    memset(G, 0, sizeof(int64_t) * c->n_rows * H);
    for (int64_t r = 0; r < c->n_rows; r++) {
        for (int64_t s = c->start[r]; s < c->start[r + 1]; s++) {
            const int64_t v = c->value[s];
            const int32_t *d = delta + (int64_t)c->sample[s] * H;
            for (int64_t j = 0; j < H; j++) G[r * H + j] += v * d[j];
        }
    }
}

/* CSC of a dense int32 matrix a (n x K): every row of W, samples with a non-zero input. */
static void columns_of_dense(const int32_t *a, int64_t n, int64_t K, columns *c)
{
    int64_t pos = 0;
    c->n_rows = K;
    for (int64_t k = 0; k < K; k++) {
        c->rows[k] = (int32_t)k;
        c->start[k] = (int32_t)pos;
        for (int64_t i = 0; i < n; i++) {
            const int32_t v = a[i * K + k];
            c->sample[pos] = (int32_t)i;
            c->value[pos] = v;
            pos += v != 0;
        }
    }
    c->start[K] = (int32_t)pos;
}

/* ------------------------------------------------------------------ threads */

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait politely: spin briefly, then give the core away (the cores may be shared). */
static inline void pause_or_yield(int *spins)
{
    if (++*spins < 200)
        relax();
    else
        sched_yield();
}

/*
 * Work sharing within a training call. Thread 0 runs the steps and opens a phase of tasks
 * twice a step (layer 1 forward, then the updates); every thread, thread 0 too, claims the
 * phase's tasks one by one until none is left. A thread that is not running (the cores are
 * shared with other jobs) delays only a task it has already claimed; thread 0 never waits
 * for a helper to start. Tasks write disjoint data, and each value is computed by the same
 * instructions whoever runs it: the bits do not depend on the threads.
 *
 * The ticket packs the phase (high 32 bits; odd: forward, even: update), the phase's task
 * count (bits 16-31) and the next unclaimed task (bits 0-15), so a claim is one CAS that
 * fails for a phase that has ended.
 */
typedef struct {
    _Atomic int64_t ticket;
    atomic_int done, stop;
} work;

#define TICKET(phase, n, next) (((int64_t)(phase) << 32) | ((int64_t)(n) << 16) | (next))

/* The next task of the ticket's phase, or -1 when it has none left (or has ended). */
static int claim(work *w, int64_t phase)
{
    int64_t t = atomic_load(&w->ticket);
    while ((t >> 32) == phase && (t & 0xFFFF) < ((t >> 16) & 0xFFFF)) {
        if (atomic_compare_exchange_weak(&w->ticket, &t, t + 1)) return (int)(t & 0xFFFF);
    }
    return -1;
}

/* ------------------------------------------------------------------ training */

typedef struct {
    const pnn_net *net;
    pnn_run *run;
    int64_t T, block[MAX_LAYERS];
    int64_t width, n_forward, n_update; /* layer-1 columns per task; tasks per phase */
    work work;
    /* the batch's rows, non-zero entries (CSR), also prepared for the paired lanes */
    int32_t *k, *v, *off;
    int16_t *pairs;
    int64_t *count, *offset, *n_pairs;
    int64_t *task_lo, *task_hi;     /* extremes of each forward task's pre-activations */
    /* per step */
    const int64_t *idx;
    int64_t n, exact[MAX_LAYERS], draw_base[MAX_LAYERS + 1], dense_rows;
    int64_t *z[MAX_LAYERS], *err, *e, *colsum[MAX_LAYERS], *G[MAX_LAYERS];
    int32_t *y[MAX_LAYERS], *gi[MAX_LAYERS], *delta[MAX_LAYERS];
    int16_t *delta16[MAX_LAYERS]; /* the deltas as int16 rows of H16[l] (zero padded) */
    int64_t H16[MAX_LAYERS], small_delta[MAX_LAYERS];
    columns in[MAX_LAYERS]; /* each layer's input, column by column */
    int32_t *seen, *fill;   /* per input column: last step it was non-zero in; fill position */
    int32_t *yk, *yv;       /* a hidden layer's output row, non-zero entries */
    int32_t *yoff;          /* ... prepared for the paired lanes */
    int16_t *ypairs;
    int16_t *B16[MAX_LAYERS]; /* the feedback as int16, where it fits */
    int64_t b_max[MAX_LAYERS];
    int64_t step_no;
} trainer;

static const void *sample_row(const pnn_run *run, int64_t i)
{
    return (const char *)run->x + i * run->x_stride * x_size(run->x_code);
}

/* Thread 0, first in a step: the batch's rows as non-zero entries, prepared for the lanes. */
static void batch_rows(trainer *tr)
{
    const pnn_run *run = tr->run;
    const int64_t n_in = tr->net->dims[0], H = tr->net->dims[1];
    int64_t pos = 0;
    for (int64_t i = 0; i < tr->n; i++) {
        tr->offset[i] = pos;
        tr->count[i] = compact_row(sample_row(run, tr->idx[i]), run->x_code, n_in, tr->k + pos,
                                   tr->v + pos);
#ifdef PAIRED_LANES
        tr->n_pairs[i] =
            prepare_pairs(tr->k + pos, tr->v + pos, tr->count[i], H, tr->off + pos, tr->pairs + pos);
#else
        (void)H;
#endif
        pos += tr->count[i] + 1; /* room for the padding entry of an odd count */
    }
}

/* Forward task: layer 1's pre-activation on a block of columns, checked, and activated. */
static void forward_task(trainer *tr, int64_t task)
{
    const pnn_net *net = tr->net;
    const pnn_run *run = tr->run;
    const int64_t H = net->dims[1], n = tr->n, j0 = task * tr->width;
    const int64_t j1 = j0 + tr->width < H ? j0 + tr->width : H;
    const int wide = (int)net->wide, small = run->x_code != X_U16;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t i = 0; i < n; i++) {
        int64_t *z = tr->z[0] + i * H;
        for (int64_t j = j0; j < j1; j++) z[j] = get_w(net->b[0], wide, j);
#ifdef PAIRED_LANES
        if (!wide && tr->block[0] > 1 && small) {
            paired_forward(net->W[0], tr->off + tr->offset[i], tr->pairs + tr->offset[i],
                           tr->n_pairs[i], tr->block[0] / 2, j0, j1, z);
        } else
#endif
            sparse_times(tr->k + tr->offset[i], tr->v + tr->offset[i], tr->count[i],
                         tr->block[0], net->W[0], wide, H, j0, j1, z, small, NULL, NULL);
        for (int64_t j = j0; j < j1; j++) {
            lo = z[j] < lo ? z[j] : lo;
            hi = z[j] > hi ? z[j] : hi;
        }
    }
    const int wrap = (int)net->wrap && outside(lo, hi);
    for (int64_t i = 0; i < n; i++) {
        int64_t *z = tr->z[0] + i * H;
        if (wrap) {
            for (int64_t j = j0; j < j1; j++) z[j] = wrap32(z[j]);
        }
        activate(net, 0, z + j0, tr->y[0] + i * H + j0, tr->gi[0] + i * H + j0, j1 - j0);
    }
    tr->task_lo[task] = lo;
    tr->task_hi[task] = hi;
}

/* A forward-phase task: the CSC of the batch input, the rows of W1 the step changes. */
static void input_columns(trainer *tr)
{
    const pnn_net *net = tr->net;
    const trainer *p = tr;
    columns *c = &tr->in[0];
    const int64_t n_in = net->dims[0], n = tr->n;
    const int32_t mark = (int32_t)++tr->step_no;
    int64_t used = 0, pos = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < p->count[i]; t++) {
            const int32_t k = p->k[p->offset[i] + t];
            if (tr->seen[k] != mark) {
                tr->seen[k] = mark;
                tr->fill[k] = 0;
                used++;
            }
            tr->fill[k]++;
        }
    }
    /* As active_columns(): W1 rows are skipped only for unsigned input, and only when at
     * least a tenth of the columns are zero in the whole batch; otherwise every row is
     * updated (zero rows keep their values but consume their rounding draws). */
    tr->dense_rows = !tr->run->skip_zero_rows || 10 * used > 9 * n_in;
    c->n_rows = 0;
    for (int64_t k = 0; k < n_in; k++) {
        if (tr->seen[k] != mark) continue;
        const int32_t count = tr->fill[k];
        c->rows[c->n_rows] = (int32_t)k;
        c->start[c->n_rows++] = (int32_t)pos;
        tr->fill[k] = (int32_t)pos;
        pos += count;
    }
    c->start[c->n_rows] = (int32_t)pos;
    for (int64_t i = 0; i < n; i++) { /* samples in increasing order within each column */
        for (int64_t t = 0; t < p->count[i]; t++) {
            const int32_t at = tr->fill[p->k[p->offset[i] + t]]++;
            c->sample[at] = (int32_t)i;
            c->value[at] = p->v[p->offset[i] + t];
        }
    }
    prepare_columns(c, tr->H16[0]);
}

/* max over columns j of sum_i |delta[i][j]|: with max|a| it bounds every gradient sum. */
static int64_t column_mass(const int32_t *delta, int64_t n, int64_t H, int64_t *scratch)
{
    int64_t best = 0;
    for (int64_t j = 0; j < H; j++) scratch[j] = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < H; j++) {
            const int64_t d = delta[i * H + j];
            scratch[j] += d < 0 ? -d : d;
        }
    }
    for (int64_t j = 0; j < H; j++) best = scratch[j] > best ? scratch[j] : best;
    return best;
}

static int64_t largest_magnitude(const int32_t *a, int64_t count)
{
    int64_t best = 0;
    for (int64_t t = 0; t < count; t++) {
        const int64_t v = a[t] < 0 ? -(int64_t)a[t] : a[t];
        best = v > best ? v : best;
    }
    return best;
}

static int first_argmax(const int64_t *row, int64_t n)
{
    int best = 0;
    for (int j = 1; j < n; j++) best = row[j] > row[best] ? j : best;
    return best;
}

/*
 * Phase 2, thread 0: everything between layer 1's two big products. Runs every check of
 * the step in the layered step's order; returns the failing site (OK: none) and sets
 * *worst. Writes no parameter.
 */
static int64_t middle(trainer *tr, int64_t *loss, int64_t *correct, int64_t *worst)
{
    const pnn_net *net = tr->net;
    const pnn_run *run = tr->run;
    const int64_t L = net->n_layers, C = net->n_classes, n = tr->n;
    const int wide = (int)net->wide, wrap = (int)net->wrap;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t t = 0; t < tr->n_forward - 1; t++) {
        lo = tr->task_lo[t] < lo ? tr->task_lo[t] : lo;
        hi = tr->task_hi[t] > hi ? tr->task_hi[t] : hi;
    }
    if (!wrap && outside(lo, hi)) {
        *worst = worst_of(lo, hi);
        return SITE(0, OP_FORWARD);
    }
    /* layers 2..L: forward */
    for (int64_t l = 1; l < L; l++) {
        const int64_t K = net->dims[l], H = net->dims[l + 1];
        int32_t *k = tr->yk, *v = tr->yv;
        for (int64_t i = 0; i < n; i++) {
            int64_t *z = tr->z[l] + i * H;
            const int64_t c = compact_dense(tr->y[l - 1] + i * K, K, k, v);
            for (int64_t j = 0; j < H; j++) z[j] = get_w(net->b[l], wide, j);
            sparse_times(k, v, c, tr->block[l], net->W[l], wide, H, 0, H, z, 1, tr->yoff,
                         tr->ypairs);
        }
        extremes(tr->z[l], n * H, wrap, &lo, &hi);
        if (!wrap && outside(lo, hi)) {
            *worst = worst_of(lo, hi);
            return SITE(l, OP_FORWARD);
        }
        activate(net, (int)l, tr->z[l], tr->y[l], tr->gi[l], n * H);
    }
    /* loss, correct count and the error e = y - target */
    const int32_t *out = tr->y[L - 1];
    int64_t sum = 0, right = 0, e_max = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t *target = run->targets + tr->idx[i] * C;
        int64_t *e = tr->e + i * C;
        int best = 0, goal = 0;
        for (int64_t c = 0; c < C; c++) {
            e[c] = out[i * C + c] - target[c];
            sum += e[c] * e[c] / 2;
            e_max = e[c] > e_max ? e[c] : -e[c] > e_max ? -e[c] : e_max;
            best = out[i * C + c] > out[i * C + best] ? (int)c : best;
        }
        goal = first_argmax(target, C);
        right += best == goal;
    }
    *loss = sum;
    *correct = right;
    /* backward: each layer's feedback, delta, gradient check and bias sum, in order */
    for (int64_t l = 0; l < L; l++) {
        const int64_t H = net->dims[l + 1], K = net->dims[l];
        if (l < L - 1) {
            int64_t *err = tr->err;
            const int32_t *B = net->B[l];
            memset(err, 0, sizeof(int64_t) * n * H);
            /* int32 lanes where |e| * max|B| * n_classes fits (it then passes its check) */
            const int narrow = tr->B16[l] && e_max <= 32767 && e_max * tr->b_max[l] * C <= I32_MAX;
            for (int64_t i = 0; i < n; i++) {
                if (narrow) {
                    const int64_t c = compact_wide(tr->e + i * C, C, tr->yk, tr->yv);
                    sparse_times(tr->yk, tr->yv, c, C, tr->B16[l], 0, H, 0, H, err + i * H, 1,
                                 tr->yoff, tr->ypairs);
                    continue;
                }
                for (int64_t c = 0; c < C; c++) {
                    const int64_t ec = tr->e[i * C + c];
                    if (!ec) continue;
                    for (int64_t j = 0; j < H; j++) err[i * H + j] += ec * B[c * H + j];
                }
            }
            extremes(err, n * H, wrap, &lo, &hi);
            if (!wrap && outside(lo, hi)) {
                *worst = worst_of(lo, hi);
                return SITE(l, OP_FEEDBACK);
            }
            divide_by_g(net, (int)l, err, tr->gi[l], tr->delta[l], n * H);
        } else {
            divide_by_g(net, (int)l, tr->e, tr->gi[l], tr->delta[l], n * H);
        }
        { /* an int16 copy for the paired lanes, when every delta fits */
            const int64_t big = largest_magnitude(tr->delta[l], n * H);
            tr->small_delta[l] = big <= 32767;
            for (int64_t i = 0; tr->small_delta[l] && i < n; i++) {
                for (int64_t j = 0; j < H; j++)
                    tr->delta16[l][i * tr->H16[l] + j] = (int16_t)tr->delta[l][i * H + j];
            }
        }
        /* the gradient a.T @ delta: proven within int32 by a bound, else computed exactly */
        int64_t a_max;
        if (l == 0) { /* the input's CSC was built in the forward phase */
            a_max = 0;
            for (int64_t s = 0; s < tr->in[0].start[tr->in[0].n_rows]; s++) {
                const int64_t v = tr->in[0].value[s] < 0 ? -(int64_t)tr->in[0].value[s]
                                                          : tr->in[0].value[s];
                a_max = v > a_max ? v : a_max;
            }
        } else {
            columns_of_dense(tr->y[l - 1], n, K, &tr->in[l]);
            prepare_columns(&tr->in[l], tr->H16[l]);
            a_max = largest_magnitude(tr->y[l - 1], n * K);
        }
        tr->exact[l] = a_max * column_mass(tr->delta[l], n, H, tr->colsum[l]) > I32_MAX;
        if (tr->exact[l] && !tr->G[l]) {
            tr->G[l] = malloc(sizeof(int64_t) * K * H); /* rare: only when the bound fails */
            if (!tr->G[l]) return OUT_OF_MEMORY;
        }
        if (tr->exact[l]) {
            exact_gradient(&tr->in[l], tr->delta[l], H, tr->G[l]);
            extremes(tr->G[l], tr->in[l].n_rows * H, wrap, &lo, &hi);
            if (!wrap && outside(lo, hi)) {
                *worst = worst_of(lo, hi);
                return SITE(l, OP_GRADIENT);
            }
        }
        int64_t *cs = tr->colsum[l];
        for (int64_t j = 0; j < H; j++) cs[j] = 0;
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < H; j++) cs[j] += tr->delta[l][i * H + j];
        }
        extremes(cs, H, wrap, &lo, &hi);
        if (!wrap && outside(lo, hi)) {
            *worst = worst_of(lo, hi);
            return SITE(l, OP_COLSUM);
        }
    }
    /* where each parameter's draws start: W (its updated rows) then b, layer by layer */
    int64_t pos = run->draws ? run->draws_used : 0;
    for (int64_t l = 0; l < L; l++) {
        const int64_t H = net->dims[l + 1];
        const int64_t rows = l == 0 && !tr->dense_rows ? tr->in[0].n_rows : net->dims[l];
        tr->draw_base[l] = pos;
        pos += rows * H + H;
    }
    tr->draw_base[L] = pos;
    return OK;
}

static divisor lr_of(const pnn_run *run)
{
    divisor d = {run->lr_inv, run->lr_m, run->lr_s, run->lr_edge};
    return d;
}

/* Update task: W1 and b1 on a block of columns, or (the last task) every later layer. */
static void update_task(trainer *tr, int64_t task)
{
    const pnn_net *net = tr->net;
    const pnn_run *run = tr->run;
    const int wide = (int)net->wide;
    const divisor lr = lr_of(run);
    const int32_t *draws = run->draws;
    const int64_t size = wide ? 4 : 2, H = net->dims[1];
    if (task < tr->n_update - 1) {
        const int64_t j0 = task * tr->width, j1 = j0 + tr->width < H ? j0 + tr->width : H;
        update_rows(&tr->in[0], tr->delta[0], tr->small_delta[0] ? tr->delta16[0] : NULL,
                    tr->H16[0], tr->exact[0] ? tr->G[0] : NULL, net->W[0], wide, H, j0, j1, lr,
                    net->clamp[0], draws, tr->draw_base[0], (int)tr->dense_rows);
        const int64_t rows = tr->dense_rows ? net->dims[0] : tr->in[0].n_rows;
        descend((char *)net->b[0] + j0 * size, wide, tr->colsum[0] + j0, j1 - j0, lr,
                net->clamp[0], draws ? draws + tr->draw_base[0] + rows * H + j0 : NULL);
        return;
    }
    for (int64_t l = 1; l < net->n_layers; l++) {
        const int64_t Hl = net->dims[l + 1], K = net->dims[l];
        update_rows(&tr->in[l], tr->delta[l], tr->small_delta[l] ? tr->delta16[l] : NULL,
                    tr->H16[l], tr->exact[l] ? tr->G[l] : NULL, net->W[l], wide, Hl, 0, Hl, lr,
                    net->clamp[l], draws, tr->draw_base[l], 1);
        descend(net->b[l], wide, tr->colsum[l], Hl, lr, net->clamp[l],
                draws ? draws + tr->draw_base[l] + K * Hl : NULL);
    }
}

/* Run the tasks of a phase that this thread can claim. */
static void work_on(trainer *tr, int64_t phase)
{
    for (int task; (task = claim(&tr->work, phase)) >= 0; atomic_fetch_add(&tr->work.done, 1)) {
        if (phase & 1) {
            if (task < tr->n_forward - 1)
                forward_task(tr, task);
            else
                input_columns(tr);
        } else {
            update_task(tr, task);
        }
    }
}

/* Thread 0: open a phase, work on it, and wait until every claimed task is finished. */
static void run_phase(trainer *tr, int64_t *phase, int64_t n_tasks)
{
    atomic_store(&tr->work.done, 0);
    ++*phase;
    atomic_store(&tr->work.ticket, TICKET(*phase, n_tasks, 0));
    work_on(tr, *phase);
    for (int spins = 0; atomic_load(&tr->work.done) < n_tasks;) pause_or_yield(&spins);
}

static void run_steps(trainer *tr)
{
    pnn_run *run = tr->run;
    int64_t phase = 0;
    for (int64_t s = 0; s * run->batch < run->n; s++) {
        tr->idx = run->order + s * run->batch;
        tr->n = run->n - s * run->batch < run->batch ? run->n - s * run->batch : run->batch;
        batch_rows(tr);
        run_phase(tr, &phase, tr->n_forward);
        int64_t loss = 0, correct = 0, worst = 0;
        const int64_t site = middle(tr, &loss, &correct, &worst);
        if (site != OK) {
            run->site = site;
            run->worst = worst;
            return;
        }
        run_phase(tr, &phase, tr->n_update);
        run->loss += loss;
        run->correct += correct;
        run->steps = s + 1;
        if (run->draws) run->draws_used = tr->draw_base[tr->net->n_layers];
    }
}

/* A helper thread: claim tasks of every phase thread 0 opens, until it stops. */
static void *helper(void *arg)
{
    trainer *tr = arg;
    int64_t seen = 0;
    int spins = 0;
    while (!atomic_load(&tr->work.stop)) {
        const int64_t phase = atomic_load(&tr->work.ticket) >> 32;
        if (phase == seen) {
            pause_or_yield(&spins);
            continue;
        }
        spins = 0;
        work_on(tr, phase);
        seen = phase;
    }
    return NULL;
}

/* How many terms of |a| <= a_max times int16 weights of |W| <= clamp an int32 lane may
 * sum (0: none, the product runs in int64). */
static int64_t block_of(int64_t a_max, int64_t clamp, int wide)
{
    if (wide || a_max * clamp > I32_MAX) return 0;
    return I32_MAX / (a_max * clamp);
}

#define ALLOC(ptr, count)                                                   \
    do {                                                                    \
        (ptr) = calloc((count) > 0 ? (size_t)(count) : 1, sizeof *(ptr));  \
        if (!(ptr)) goto out_of_memory;                                     \
    } while (0)

/*
 * Train on run->n samples of run->order, batch after batch, updating the parameters in
 * place. Returns 0 when every step passed, 1 when a step's check failed (run->site,
 * run->worst; earlier steps are kept, the failing step wrote nothing), -1 without memory.
 */
int64_t pnn_train(const pnn_net *net, pnn_run *run)
{
    trainer tr;
    int64_t status = -1;
    memset(&tr, 0, sizeof tr);
    tr.net = net;
    tr.run = run;
    const int64_t L = net->n_layers, n_in = net->dims[0], batch = run->batch;
    int64_t widest = 0;
    for (int64_t l = 0; l <= L; l++) widest = net->dims[l] > widest ? net->dims[l] : widest;
    run->loss = run->correct = run->steps = run->worst = run->draws_used = 0;
    run->site = OK;
    tr.T = run->threads < 1 ? 1 : run->threads > MAX_THREADS ? MAX_THREADS : run->threads;
    /* layer 1 in tasks of whole 32-column tiles: one alone, about two per thread otherwise */
    tr.width = (net->dims[1] + (tr.T == 1 ? 1 : 2 * tr.T) - 1) / (tr.T == 1 ? 1 : 2 * tr.T);
    tr.width = tr.width < 32 ? 32 : (tr.width + 31) / 32 * 32;
    tr.n_forward = tr.n_update = (net->dims[1] + tr.width - 1) / tr.width + 1;
    tr.block[0] = block_of(run->x_max, net->clamp[0], (int)net->wide);
    for (int64_t l = 1; l < L; l++) tr.block[l] = block_of(127, net->clamp[l], (int)net->wide);
    for (int64_t l = 0; l < L; l++) {
        const int64_t K = net->dims[l], H = net->dims[l + 1];
        ALLOC(tr.z[l], batch * H);
        ALLOC(tr.y[l], batch * H);
        ALLOC(tr.gi[l], batch * H);
        ALLOC(tr.delta[l], batch * H);
        tr.H16[l] = (H + 31) / 32 * 32;
        ALLOC(tr.delta16[l], batch * tr.H16[l]);
        ALLOC(tr.colsum[l], H);
        ALLOC(tr.in[l].rows, K);
        ALLOC(tr.in[l].start, K + 1);
        ALLOC(tr.in[l].sample, batch * K + SLACK);
        ALLOC(tr.in[l].value, batch * K + SLACK);
        ALLOC(tr.in[l].off, batch * K + K + SLACK);
        ALLOC(tr.in[l].pairs, batch * K + K + SLACK);
        ALLOC(tr.in[l].n_pairs, K);
    }
    ALLOC(tr.e, batch * net->n_classes);
    for (int64_t l = 0; l + 1 < L; l++) { /* the feedback as int16 rows, where it fits */
        const int64_t count = net->n_classes * net->dims[l + 1];
        tr.b_max[l] = largest_magnitude(net->B[l], count);
        if (tr.b_max[l] > 32767) continue;
        ALLOC(tr.B16[l], count);
        for (int64_t q = 0; q < count; q++) tr.B16[l][q] = (int16_t)net->B[l][q];
    }
    ALLOC(tr.err, batch * widest);
    ALLOC(tr.seen, n_in);
    ALLOC(tr.fill, n_in);
    ALLOC(tr.yk, widest + SLACK);
    ALLOC(tr.yv, widest + SLACK);
    ALLOC(tr.yoff, widest + SLACK);
    ALLOC(tr.ypairs, widest + SLACK);
    ALLOC(tr.k, batch * (n_in + 1) + SLACK);
    ALLOC(tr.v, batch * (n_in + 1) + SLACK);
    ALLOC(tr.off, batch * (n_in + 1) + SLACK);
    ALLOC(tr.pairs, batch * (n_in + 1) + SLACK);
    ALLOC(tr.count, batch);
    ALLOC(tr.offset, batch);
    ALLOC(tr.n_pairs, batch);
    ALLOC(tr.task_lo, tr.n_forward);
    ALLOC(tr.task_hi, tr.n_forward);
    {
        pthread_t threads[MAX_THREADS];
        int64_t started = 1; /* a helper that cannot start is not needed: tasks wait for none */
        for (; started < tr.T; started++) {
            if (pthread_create(&threads[started], NULL, helper, &tr)) break;
        }
        run_steps(&tr);
        atomic_store(&tr.work.stop, 1);
        for (int64_t t = 1; t < started; t++) pthread_join(threads[t], NULL);
        status = run->site == OK ? 0 : run->site == OUT_OF_MEMORY ? -1 : 1;
    }
out_of_memory:
    for (int64_t l = 0; l < L; l++) {
        free(tr.z[l]);
        free(tr.y[l]);
        free(tr.gi[l]);
        free(tr.delta[l]);
        free(tr.delta16[l]);
        free(tr.colsum[l]);
        free(tr.G[l]);
        free(tr.B16[l]);
        free(tr.in[l].rows);
        free(tr.in[l].start);
        free(tr.in[l].sample);
        free(tr.in[l].value);
        free(tr.in[l].off);
        free(tr.in[l].pairs);
        free(tr.in[l].n_pairs);
    }
    free(tr.e);
    free(tr.err);
    free(tr.seen);
    free(tr.fill);
    free(tr.yk);
    free(tr.yv);
    free(tr.yoff);
    free(tr.ypairs);
    free(tr.k);
    free(tr.v);
    free(tr.off);
    free(tr.pairs);
    free(tr.count);
    free(tr.offset);
    free(tr.n_pairs);
    free(tr.task_lo);
    free(tr.task_hi);
    return status;
}

/* ------------------------------------------------------------------ test pass */

typedef struct {
    const pnn_net *net;
    const void *x;
    int64_t x_code, x_stride, x_max, n, chunk, n_chunks, T;
    int64_t *out;
    int64_t *stats; /* T x n_chunks x n_layers x (lo, hi) */
    int64_t failed; /* a thread ran out of memory */
} scorer;

#define GROUP 16 /* test-pass rows that share each tile of W while it is in cache */

static void score_rows(scorer *sc, int64_t t)
{
    const pnn_net *net = sc->net;
    const int64_t L = net->n_layers, C = net->n_classes;
    const int wide = (int)net->wide, wrap = (int)net->wrap;
    const int64_t r0 = sc->n * t / sc->T, r1 = sc->n * (t + 1) / sc->T;
    int64_t widest = 0, block[MAX_LAYERS], offset[GROUP], count[GROUP], n_pairs[GROUP];
    for (int64_t l = 0; l <= L; l++) widest = net->dims[l] > widest ? net->dims[l] : widest;
    block[0] = block_of(sc->x_max, net->clamp[0], wide);
    for (int64_t l = 1; l < L; l++) block[l] = block_of(127, net->clamp[l], wide);
    const int64_t room = widest + SLACK;
    int32_t *k = malloc(sizeof(int32_t) * GROUP * room);
    int32_t *v = malloc(sizeof(int32_t) * GROUP * room);
    int32_t *y = malloc(sizeof(int32_t) * GROUP * widest);
    int32_t *gi = malloc(sizeof(int32_t) * GROUP * widest);
    int64_t *z = malloc(sizeof(int64_t) * GROUP * widest);
    int32_t *off = malloc(sizeof(int32_t) * GROUP * room);
    int16_t *pairs = malloc(sizeof(int16_t) * (GROUP * room + 1));
    if (!k || !v || !y || !gi || !z || !off || !pairs) {
        sc->failed = 1;
        goto done;
    }
    for (int64_t g = r0; g < r1; g += GROUP) {
        const int64_t n = r1 - g < GROUP ? r1 - g : GROUP;
        for (int64_t l = 0; l < L; l++) {
            const int64_t H = net->dims[l + 1];
            for (int64_t i = 0; i < n; i++) {
                const char *row = (const char *)sc->x + (g + i) * sc->x_stride * x_size(sc->x_code);
                offset[i] = i * room;
                count[i] = l == 0 ? compact_row(row, sc->x_code, net->dims[0], k + i * room, v + i * room)
                                  : compact_dense(y + i * widest, net->dims[l], k + i * room, v + i * room);
                for (int64_t j = 0; j < H; j++) z[i * widest + j] = get_w(net->b[l], wide, j);
            }
            rows_times(k, v, offset, count, n, block[l], net->W[l], wide, H, 0, H, z, widest,
                       l > 0 || sc->x_code != X_U16, off, pairs, n_pairs);
            for (int64_t i = 0; i < n; i++) {
                int64_t *zi = z + i * widest;
                int64_t *stats = sc->stats + ((t * sc->n_chunks + (g + i) / sc->chunk) * L) * 2;
                int64_t lo = stats[2 * l], hi = stats[2 * l + 1];
                for (int64_t j = 0; j < H; j++) {
                    lo = zi[j] < lo ? zi[j] : lo;
                    hi = zi[j] > hi ? zi[j] : hi;
                    if (wrap) zi[j] = wrap32(zi[j]);
                }
                stats[2 * l] = lo;
                stats[2 * l + 1] = hi;
                activate(net, (int)l, zi, y + i * widest, gi + i * widest, H);
            }
        }
        for (int64_t i = 0; i < n; i++) {
            for (int64_t c = 0; c < C; c++) sc->out[(g + i) * C + c] = y[i * widest + c];
        }
    }
done:
    free(k);
    free(v);
    free(y);
    free(gi);
    free(z);
    free(off);
    free(pairs);
}

static void *score_thread(void *arg)
{
    scorer **pair = arg;
    score_rows(pair[0], (int64_t)(intptr_t)pair[1]);
    return NULL;
}

/*
 * Class scores of n rows (the last layer's outputs), checked in chunks of `chunk` rows as
 * the layered test pass checks them. Returns 0, or 1 with fail = (chunk, site, worst) for
 * the first chunk (then layer) whose pre-activation leaves int32 under "raise"; -1
 * without memory.
 */
int64_t pnn_scores(const pnn_net *net, const void *x, int64_t x_code, int64_t x_stride,
                   int64_t x_max, int64_t n, int64_t chunk, int64_t threads, int64_t *out,
                   int64_t *fail)
{
    scorer sc = {net, x, x_code, x_stride, x_max, n, chunk, (n + chunk - 1) / chunk,
                 threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads, out, NULL, 0};
    const int64_t L = net->n_layers;
    if (sc.T > n) sc.T = n > 0 ? n : 1;
    sc.stats = malloc(sizeof(int64_t) * (size_t)(sc.T * sc.n_chunks * L * 2 + 1));
    if (!sc.stats) return -1;
    for (int64_t q = 0; q < sc.T * sc.n_chunks * L; q++) {
        sc.stats[2 * q] = INT64_MAX;
        sc.stats[2 * q + 1] = INT64_MIN;
    }
    pthread_t th[MAX_THREADS];
    void *args[MAX_THREADS][2];
    int64_t started = 1;
    for (; started < sc.T; started++) {
        args[started][0] = &sc;
        args[started][1] = (void *)(intptr_t)started;
        if (pthread_create(&th[started], NULL, score_thread, args[started])) break;
    }
    /* rows of threads that could not start are scored here */
    for (int64_t t = 0; t < sc.T; t++) {
        if (t == 0 || t >= started) score_rows(&sc, t);
    }
    for (int64_t t = 1; t < started; t++) pthread_join(th[t], NULL);
    int64_t status = sc.failed ? -1 : 0;
    for (int64_t c = 0; status == 0 && c < sc.n_chunks && !net->wrap; c++) {
        for (int64_t l = 0; l < L; l++) {
            int64_t lo = INT64_MAX, hi = INT64_MIN;
            for (int64_t t = 0; t < sc.T; t++) {
                const int64_t *st = sc.stats + ((t * sc.n_chunks + c) * L + l) * 2;
                lo = st[0] < lo ? st[0] : lo;
                hi = st[1] > hi ? st[1] : hi;
            }
            if (outside(lo, hi)) {
                fail[0] = c;
                fail[1] = SITE(l, OP_FORWARD);
                fail[2] = worst_of(lo, hi);
                status = 1;
                break;
            }
        }
    }
    free(sc.stats);
    return status;
}

int64_t pnn_abi(void) { return PNN_ABI; }
