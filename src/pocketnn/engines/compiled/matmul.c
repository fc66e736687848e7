/*
 * The "compiled" engine's exact integer matrix product: out = x @ y as int64, with integer
 * instructions only (tests/test_compiled.py disassembles the library to check).
 *
 * Exactness. The caller (pocketnn.engines.compiled.gemm) has bounded one term,
 * unit >= max|x| * max|y|, and asks for one of three lane kinds:
 *  - PAIRS: both operands within int16; int32 lanes, each adding two terms per
 *    instruction (vpdpwssd / pmaddwd), over chunks of at most `span` terms with
 *    span * unit <= INT32_MAX, so every chunk's sum is an int32 value. The lanes wrap
 *    modulo 2**32 (the one pmaddwd overflow, -32768 * -32768 twice, is such a wrap), and
 *    a sum computed modulo 2**32 that is known to lie in int32 is that sum exactly;
 *  - WORDS: operands within int32, int32 lanes, the same chunks;
 *  - WIDE: operands within int32, int64 lanes (32 x 32 -> 64-bit multiplies), for bounds
 *    that int32 chunks cannot hold (the caller has checked the whole sum fits int64).
 * Each chunk's sums are added into the int64 output. Integer addition is associative, so
 * neither the chunking, the blocking nor the thread count changes a bit of the result.
 *
 * Blocking (GotoBLAS-style, sized for these products' shapes): y is packed once into
 * panels of NR columns, terms grouped as the lanes take them; x is converted, MR rows and
 * one chunk at a time, into a small row block that stays in the nearest cache while the
 * MR x NR register tile runs over every panel and is added into the output. Both are
 * packed from contiguous runs of their operand whichever way it is laid out (cols.T and
 * W.T are read in their own memory order).
 *
 * Threads split the row blocks; each has its own row block in the caller's work buffer
 * (pocketnn keeps one per OS thread). Nothing here is global or static-mutable.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

enum { CODE_U8, CODE_I8, CODE_U16, CODE_I16, CODE_I32, CODE_I64 }; /* gemm.CODES */
enum { LANES_PAIRS, LANES_WORDS, LANES_WIDE };                     /* gemm.LANES */

#define GEMM_MAX_THREADS 8
#define KC 1024      /* terms per chunk at most: a row block of MR x KC int16 fits L1 */
#define XS (KC + 32) /* row stride of the row block (elements): rows off the same sets */
#define ALIGN 64
#define BAD_ARGUMENT (-3)

/* The vector width and the register tile of the host's vector unit. */
#if defined(__AVX512BW__)
#define VB 64
#define MR 12 /* 32 vector registers: 24 accumulators, 2 panel vectors, 1 broadcast */
#elif defined(__AVX2__)
#define VB 32
#define MR 6 /* 16 vector registers: 12 accumulators, 2 panel vectors, 1 broadcast */
#elif defined(__SSE2__)
#define VB 16
#define MR 6 /* 16 vector registers: 12 accumulators, 2 panel vectors, 1 broadcast */
#else
#define VB 16
#define MR 8
#endif

typedef int32_t vw __attribute__((vector_size(VB)));  /* int32 lanes */
typedef uint32_t vu __attribute__((vector_size(VB))); /* the same, wrapping */
typedef int64_t vl __attribute__((vector_size(VB)));  /* int64 lanes */

/* acc + a.lo * b.lo + a.hi * b.hi in every 32-bit lane (int16 halves), modulo 2**32. */
static inline vw pair_madd(vw acc, vw a, vw b)
{
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
    return (vw)_mm512_dpwssd_epi32((__m512i)acc, (__m512i)a, (__m512i)b);
#elif defined(__AVX512BW__)
    return (vw)_mm512_add_epi32((__m512i)acc, _mm512_madd_epi16((__m512i)a, (__m512i)b));
#elif defined(__AVX2__) && defined(__AVXVNNI__)
    return (vw)_mm256_dpwssd_avx_epi32((__m256i)acc, (__m256i)a, (__m256i)b);
#elif defined(__AVX2__)
    return (vw)_mm256_add_epi32((__m256i)acc, _mm256_madd_epi16((__m256i)a, (__m256i)b));
#elif defined(__SSE2__)
    return (vw)_mm_add_epi32((__m128i)acc, _mm_madd_epi16((__m128i)a, (__m128i)b));
#else /* each half sign-extended; the products fit int32, their sum is taken wrapping */
    const vw alo = (vw)((vu)a << 16) >> 16, blo = (vw)((vu)b << 16) >> 16;
    return (vw)((vu)acc + (vu)(alo * blo) + (vu)((a >> 16) * (b >> 16)));
#endif
}

/* acc + a * b in int32 lanes (|a * b| and every partial sum within int32: the bound). */
static inline vw word_madd(vw acc, vw a, vw b) { return acc + a * b; }

/* acc + a * b in int64 lanes whose values are within int32. */
static inline vl wide_madd(vl acc, vl a, vl b)
{
#if defined(__AVX512BW__)
    return acc + (vl)_mm512_mul_epi32((__m512i)a, (__m512i)b);
#elif defined(__AVX2__)
    return acc + (vl)_mm256_mul_epi32((__m256i)a, (__m256i)b);
#elif defined(__SSE4_1__)
    return acc + (vl)_mm_mul_epi32((__m128i)a, (__m128i)b);
#else
    return acc + a * b;
#endif
}

/* Add (or, for a chunk's first terms, store) the first `width` of `count` int64 values
 * into an output row. */
#if defined(__AVX512BW__)
static inline void put_lanes(int64_t *o, const __m512i *q, int count, int64_t width, int add)
{
    for (int v = 0; v < count / 8 && 8 * v < width; v++) {
        const __mmask8 mask = width - 8 * v >= 8 ? 0xFF : (__mmask8)((1u << (width - 8 * v)) - 1);
        __m512i sum = q[v];
        if (add) sum = _mm512_add_epi64(sum, _mm512_maskz_loadu_epi64(mask, o + 8 * v));
        _mm512_mask_storeu_epi64(o + 8 * v, mask, sum);
    }
}
#else
static inline void put_lanes(int64_t *o, const int64_t *q, int count, int64_t width, int add)
{
    (void)count;
    for (int64_t c = 0; c < width; c++) o[c] = (add ? o[c] : 0) + q[c];
}
#endif

/* put_lanes for two vectors of int32 lane sums (a, then b), and of int64 ones. */
static inline void put_words(int64_t *o, vw a, vw b, int64_t width, int add)
{
#if defined(__AVX512BW__)
    const __m512i q[4] = {_mm512_cvtepi32_epi64(_mm512_castsi512_si256((__m512i)a)),
                          _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64((__m512i)a, 1)),
                          _mm512_cvtepi32_epi64(_mm512_castsi512_si256((__m512i)b)),
                          _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64((__m512i)b, 1))};
#else
    int64_t q[2 * VB / 4];
    for (int c = 0; c < VB / 4; c++) {
        q[c] = a[c];
        q[c + VB / 4] = b[c];
    }
#endif
    put_lanes(o, q, 2 * VB / 4, width, add);
}

static inline void put_wide(int64_t *o, vl a, vl b, int64_t width, int add)
{
#if defined(__AVX512BW__)
    const __m512i q[2] = {(__m512i)a, (__m512i)b};
#else
    int64_t q[2 * VB / 8];
    memcpy(q, &a, sizeof a);
    memcpy(q + VB / 8, &b, sizeof b);
#endif
    put_lanes(o, q, 2 * VB / 8, width, add);
}

/* An operand: element (i, j) at p + i * rs + j * cs (strides in elements), of `code`. */
typedef struct {
    const void *p;
    int64_t code, rs, cs;
} operand;

/*
 * dst[q * G + h] = run h's q-th value, for q < count: run h starts at from[h] and steps by
 * `stride` (a pair's two terms interleaved for G = 2). The caller has checked that every
 * value fits the destination type. One loop per source type: contiguous runs vectorise.
 */
#define CONVERT_LOOP(ST, G)                                                                  \
    do {                                                                                     \
        const ST *s0 = (const ST *)s->p + from[0], *s1 = (const ST *)s->p + from[G - 1];     \
        if (G == 1 && stride == 1) {                                                         \
            for (int64_t q = 0; q < count; q++) dst[q] = (__typeof__(*dst))s0[q];            \
        } else if (G == 1) {                                                                 \
            for (int64_t q = 0; q < count; q++) dst[q] = (__typeof__(*dst))s0[q * stride];   \
        } else if (stride == 1) {                                                            \
            for (int64_t q = 0; q < count; q++) {                                            \
                dst[2 * q] = (__typeof__(*dst))s0[q];                                        \
                dst[2 * q + 1] = (__typeof__(*dst))s1[q];                                    \
            }                                                                                \
        } else {                                                                             \
            for (int64_t q = 0; q < count; q++) {                                            \
                dst[2 * q] = (__typeof__(*dst))s0[q * stride];                               \
                dst[2 * q + 1] = (__typeof__(*dst))s1[q * stride];                           \
            }                                                                                \
        }                                                                                    \
    } while (0)
#define DEFINE_CONVERT(NAME, ET, G, FAST)                                                    \
    static void NAME(ET *restrict dst, const operand *s, const int64_t *from, int64_t stride, \
                     int64_t count)                                                          \
    {                                                                                        \
        if (FAST(dst, s, from, stride, count, G)) return;                                    \
        switch (s->code) {                                                                   \
        case CODE_U8: CONVERT_LOOP(uint8_t, G); break;                                       \
        case CODE_I8: CONVERT_LOOP(int8_t, G); break;                                        \
        case CODE_U16: CONVERT_LOOP(uint16_t, G); break;                                     \
        case CODE_I16: CONVERT_LOOP(int16_t, G); break;                                      \
        case CODE_I32: CONVERT_LOOP(int32_t, G); break;                                      \
        default: CONVERT_LOOP(int64_t, G); break;                                            \
        }                                                                                    \
    }
#if defined(__AVX512BW__)
/* 32 values from s at q (the first `count` of them; the rest read as zero) as int16. */
static inline __m512i load32(const operand *s, int64_t from, int64_t count)
{
    const __mmask32 mask = count >= 32 ? 0xFFFFFFFFu : (__mmask32)((1ull << count) - 1);
    switch (s->code) {
    case CODE_U8:
        return _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, (const uint8_t *)s->p + from));
    case CODE_I8:
        return _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, (const int8_t *)s->p + from));
    case CODE_U16:
    case CODE_I16:
        return _mm512_maskz_loadu_epi16(mask, (const int16_t *)s->p + from);
    case CODE_I32: { /* (the parts past count are not read: short runs are common) */
        const int32_t *v = (const int32_t *)s->p + from;
        const __m256i lo = _mm512_cvtepi32_epi16(_mm512_maskz_loadu_epi32((__mmask16)mask, v));
        if (count <= 16) return _mm512_castsi256_si512(lo);
        return _mm512_inserti64x4(
            _mm512_castsi256_si512(lo),
            _mm512_cvtepi32_epi16(_mm512_maskz_loadu_epi32((__mmask16)(mask >> 16), v + 16)), 1);
    }
    default: {
        const int64_t *v = (const int64_t *)s->p + from;
        __m128i q[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(),
                        _mm_setzero_si128()};
        for (int h = 0; h < 4 && 8 * h < count; h++)
            q[h] = _mm512_cvtepi64_epi16(_mm512_maskz_loadu_epi64((__mmask8)(mask >> (8 * h)), v + 8 * h));
        const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(q[0]), q[1], 1);
        const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(q[2]), q[3], 1);
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    }
}

/* The int16 conversions of contiguous runs in 32-value vectors, tails under masks (the
 * compiler's own vectorisation leaves short runs, a convolution's 9 or 27 terms, scalar).
 * Returns 0 where the portable loops run. */
static inline int fast_int16(int16_t *dst, const operand *s, const int64_t *from, int64_t stride,
                             int64_t count, int g)
{
    if (stride != 1) return 0;
    if (g == 1) {
        for (int64_t q = 0; q < count; q += 32) {
            const int64_t left = count - q;
            const __mmask32 mask = left >= 32 ? 0xFFFFFFFFu : (__mmask32)((1ull << left) - 1);
            _mm512_mask_storeu_epi16(dst + q, mask, load32(s, from[0] + q, left));
        }
        return 1;
    }
    const __m512i first = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                           39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i second = _mm512_add_epi16(first, _mm512_set1_epi16(16));
    for (int64_t q = 0; q < count; q += 32) {
        const int64_t left = count - q;
        const __m512i a = load32(s, from[0] + q, left), b = load32(s, from[1] + q, left);
        const int64_t words = 2 * (left < 32 ? left : 32);
        const __mmask32 m0 = words >= 32 ? 0xFFFFFFFFu : (__mmask32)((1ull << words) - 1);
        const __mmask32 m1 = words >= 64 ? 0xFFFFFFFFu : words > 32 ? (__mmask32)((1ull << (words - 32)) - 1) : 0;
        _mm512_mask_storeu_epi16(dst + 2 * q, m0, _mm512_permutex2var_epi16(a, first, b));
        _mm512_mask_storeu_epi16(dst + 2 * q + 32, m1, _mm512_permutex2var_epi16(a, second, b));
    }
    return 1;
}
#else
#define fast_int16(dst, s, from, stride, count, g) 0
#endif
#define NO_FAST(dst, s, from, stride, count, g) 0

DEFINE_CONVERT(convert_int16_t, int16_t, 1, fast_int16)
DEFINE_CONVERT(convert_int32_t, int32_t, 1, NO_FAST)
DEFINE_CONVERT(convert_int64_t, int64_t, 1, NO_FAST)
DEFINE_CONVERT(interleave_int16_t, int16_t, 2, fast_int16)

/* One job of a product: rows [i0, i1) of the output, in row blocks of MR. */
typedef struct {
    const operand *x;
    int64_t k, m, chunk, i0, i1;
    const void *yp;
    int64_t *out;
    void *xp; /* this job's row block */
} job;

/*
 * The product for one lane kind: ET the packed element type, G elements per lane word
 * (a pair of int16, or one value), LW the lane word, V the vector of lane words, MADD its
 * multiply-add. NR = two vectors of lane words: the tile is MR x NR.
 *
 * The row block holds MR rows of one chunk of x as lane words, in one of two layouts, so
 * that packing it writes contiguous runs whichever way x is laid out: by rows (word (r, g)
 * at r * XS + g * G elements) when x's rows are contiguous, by terms (at (g * MR + r) * G)
 * when its columns are.
 */
#define DEFINE_PRODUCT(NAME, ET, G, LW, V, MADD, PUT)                                            \
    enum { NAME##_NR = 2 * VB / (int)sizeof(LW) };                                          \
                                                                                              \
    /* y's panels: [panel][lane word g][NR][G] elements, zero beyond k and m. */             \
    static int64_t NAME##_panel_size(int64_t k) { return (k + G - 1) / G * G * NAME##_NR; }  \
                                                                                              \
    /* count lane words from runs starting at from[0] (and from[1]: a pair's second terms) */ \
    static inline void NAME##_words(ET *dst, const operand *s, const int64_t *from,          \
                                    int64_t stride, int64_t count)                            \
    {                                                                                         \
        if (G == 2)                                                                           \
            interleave_int16_t((int16_t *)dst, s, from, stride, count);                       \
        else                                                                                  \
            convert_##ET(dst, s, from, stride, count);                                        \
    }                                                                                         \
                                                                                              \
    static void NAME##_pack_y(const operand *y, int64_t k, int64_t m, ET *yp)                \
    {                                                                                         \
        const int64_t size = NAME##_panel_size(k), panels = (m + NAME##_NR - 1) / NAME##_NR; \
        if (m % NAME##_NR || k % G) memset(yp, 0, sizeof(ET) * (size_t)(size * panels));     \
        for (int64_t p = 0; p < panels; p++) {                                                \
            ET *d = yp + p * size;                                                            \
            const int64_t j0 = p * NAME##_NR;                                                 \
            const int64_t width = m - j0 < NAME##_NR ? m - j0 : NAME##_NR;                   \
            if (y->cs == 1 || y->rs != 1) { /* a lane word's terms, along the columns */      \
                for (int64_t t = 0; t < k; t += G) {                                          \
                    const int64_t last = t + G - 1 < k ? t + G - 1 : t;                       \
                    const int64_t from[2] = {t * y->rs + j0 * y->cs, last * y->rs + j0 * y->cs}; \
                    ET *g = d + t * NAME##_NR;                                                \
                    NAME##_words(g, y, from, y->cs, width);                                   \
                    if (last == t && G == 2)                                                  \
                        for (int64_t c = 0; c < width; c++) g[c * G + 1] = 0;                 \
                }                                                                             \
            } else { /* a column's terms are contiguous: converted in runs, then placed */    \
                ET run[64];                                                                   \
                for (int64_t c = 0; c < width; c++) {                                         \
                    for (int64_t t0 = 0; t0 < k; t0 += 64) {                                  \
                        const int64_t len = k - t0 < 64 ? k - t0 : 64;                        \
                        const int64_t from[2] = {t0 + (j0 + c) * y->cs, 0};                   \
                        convert_##ET(run, y, from, 1, len);                                   \
                        for (int64_t t = 0; t < len; t++)                                     \
                            d[(t0 + t) / G * G * NAME##_NR + c * G + (t0 + t) % G] = run[t];  \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    /* Rows [i, i + rows) and terms [t0, t0 + kc) of x into the row block, zero in the */    \
    /* rows past `rows` and in the lane word past kc; returns 1 for the terms layout. */     \
    static int NAME##_pack_x(const operand *x, int64_t i, int64_t rows, int64_t t0,          \
                             int64_t kc, ET *xp)                                              \
    {                                                                                         \
        const int64_t width = (kc + G - 1) / G * G;                                           \
        if (x->cs == 1 || x->rs != 1) {                                                       \
            for (int64_t r = 0; r < rows; r++) {                                              \
                const int64_t from[2] = {(i + r) * x->rs + t0 * x->cs, 0};                    \
                convert_##ET(xp + r * XS, x, from, x->cs, kc);                                \
                if (width > kc) xp[r * XS + kc] = 0; /* a pair's missing second term */      \
            }                                                                                 \
            for (int64_t r = rows; r < MR; r++)                                               \
                memset(xp + r * XS, 0, sizeof(ET) * (size_t)width);                          \
            return 0;                                                                         \
        }                                                                                     \
        if (rows < MR || kc % G) memset(xp, 0, sizeof(ET) * (size_t)(MR * width));           \
        for (int64_t t = 0; t < kc; t += G) {                                                 \
            const int64_t last = t + G - 1 < kc ? t + G - 1 : t;                              \
            const int64_t from[2] = {i + (t0 + t) * x->cs, i + (t0 + last) * x->cs};          \
            NAME##_words(xp + t * MR, x, from, 1, rows);                                      \
            if (last == t && G == 2)                                                          \
                for (int64_t r = 0; r < rows; r++) xp[t * MR + r * G + 1] = 0;                \
        }                                                                                     \
        return 1;                                                                             \
    }                                                                                         \
                                                                                              \
    /* The row block's first `rows` rows times one panel, over `groups` lane words, into */  \
    /* the output rows at o (stride m), the first `width` columns; the row block's word */   \
    /* (r, g) at r * RS + g * GS elements. */                                                \
    static inline void NAME##_tile(const ET *xp, int64_t RS, int64_t GS, const ET *yp,       \
                                   int64_t groups, int64_t *o, int64_t m, int64_t rows,       \
                                   int64_t width, int add)                                    \
    {                                                                                         \
        V acc[MR][2];                                                                         \
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (V){0};                          \
        for (int64_t g = 0; g < groups; g++) {                                                \
            V b0, b1;                                                                         \
            memcpy(&b0, yp + g * G * NAME##_NR, sizeof b0);                                   \
            memcpy(&b1, yp + g * G * NAME##_NR + G * NAME##_NR / 2, sizeof b1);               \
            for (int r = 0; r < MR; r++) {                                                    \
                LW w;                                                                         \
                memcpy(&w, xp + r * RS + g * GS, sizeof w);                                   \
                const V a = (V){0} + w;                                                       \
                acc[r][0] = MADD(acc[r][0], a, b0);                                           \
                acc[r][1] = MADD(acc[r][1], a, b1);                                           \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < MR && r < rows; r++) PUT(o + r * m, acc[r][0], acc[r][1], width, add); \
    }                                                                                         \
                                                                                              \
    static void NAME##_rows(const job *jb)                                                    \
    {                                                                                         \
        const int64_t m = jb->m, panels = (m + NAME##_NR - 1) / NAME##_NR;                    \
        const int64_t size = NAME##_panel_size(jb->k);                                        \
        ET *xp = jb->xp;                                                                      \
        for (int64_t i = jb->i0; i < jb->i1; i += MR) {                                       \
            const int64_t rows = jb->i1 - i < MR ? jb->i1 - i : MR;                           \
            for (int64_t t0 = 0; t0 < jb->k; t0 += jb->chunk) {                               \
                const int64_t kc = jb->k - t0 < jb->chunk ? jb->k - t0 : jb->chunk;           \
                const int64_t groups = (kc + G - 1) / G;                                      \
                const int by_terms = NAME##_pack_x(jb->x, i, rows, t0, kc, xp);               \
                for (int64_t p = 0; p < panels; p++) {                                        \
                    const int64_t j0 = p * NAME##_NR;                                         \
                    const int64_t width = m - j0 < NAME##_NR ? m - j0 : NAME##_NR;           \
                    const ET *yp = (const ET *)jb->yp + p * size + t0 * NAME##_NR;            \
                    int64_t *o = jb->out + i * m + j0;                                        \
                    if (by_terms) /* two calls with constant strides: inlined apart */        \
                        NAME##_tile(xp, G, MR * G, yp, groups, o, m, rows, width, t0 > 0);    \
                    else                                                                      \
                        NAME##_tile(xp, XS, G, yp, groups, o, m, rows, width, t0 > 0);        \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

DEFINE_PRODUCT(pairs, int16_t, 2, int32_t, vw, pair_madd, put_words)
DEFINE_PRODUCT(words, int32_t, 1, int32_t, vw, word_madd, put_words)
DEFINE_PRODUCT(wide, int64_t, 1, int64_t, vl, wide_madd, put_wide)

static int64_t nr_of(int64_t lanes)
{
    return lanes == LANES_PAIRS ? pairs_NR : lanes == LANES_WORDS ? words_NR : wide_NR;
}

static int64_t element_size(int64_t lanes)
{
    return lanes == LANES_PAIRS ? 2 : lanes == LANES_WORDS ? 4 : 8;
}

static int64_t up(int64_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

/* Terms per chunk: at most span (the int32 bound) and KC, and whole lane words but the last. */
static int64_t chunk_of(int64_t lanes, int64_t k, int64_t span)
{
    int64_t c = span < KC ? span : KC;
    if (c >= k) return k > 0 ? k : 1;
    if (lanes == LANES_PAIRS) c &= ~(int64_t)1;
    return c;
}

/* Bytes of the work buffer pnn_matmul needs for a product of shared dimension k and m
 * columns on `threads` threads. */
int64_t pnn_matmul_work(int64_t lanes, int64_t k, int64_t m, int64_t threads)
{
    const int64_t es = element_size(lanes), nr = nr_of(lanes);
    const int64_t panel = (k + 1) / 2 * 2 * nr * es;
    const int64_t per_thread = up(MR * XS * es);
    return ALIGN + up(panel * ((m + nr - 1) / nr)) + threads * per_thread;
}

static void run_job(int64_t lanes, const job *jb)
{
    if (lanes == LANES_PAIRS)
        pairs_rows(jb);
    else if (lanes == LANES_WORDS)
        words_rows(jb);
    else
        wide_rows(jb);
}

typedef struct {
    int64_t lanes;
    job jb;
} task;

static void *run_task(void *arg)
{
    const task *t = arg;
    run_job(t->lanes, &t->jb);
    return NULL;
}

/*
 * out (n x m, row-major int64) = x (n x k) @ y (k x m), element (i, j) of an operand at
 * p + i * rs + j * cs. lanes and span as the caller proved them (see the top of the file);
 * work: at least pnn_matmul_work(lanes, k, m, threads) bytes. Returns 0, or
 * BAD_ARGUMENT for a lane kind, dtype code, span or buffer this file does not take.
 */
int64_t pnn_matmul(int64_t n, int64_t k, int64_t m, const void *x, int64_t x_code, int64_t x_rs,
                   int64_t x_cs, const void *y, int64_t y_code, int64_t y_rs, int64_t y_cs,
                   int64_t lanes, int64_t span, int64_t threads, int64_t *out, void *work,
                   int64_t work_bytes)
{
    if (lanes < LANES_PAIRS || lanes > LANES_WIDE || span < 1 || n < 0 || k < 0 || m < 0)
        return BAD_ARGUMENT;
    if (x_code < CODE_U8 || x_code > CODE_I64 || y_code < CODE_U8 || y_code > CODE_I64)
        return BAD_ARGUMENT;
    if (k == 0) {
        memset(out, 0, sizeof(int64_t) * (size_t)(n * m));
        return 0;
    }
    threads = threads < 1 ? 1 : threads > GEMM_MAX_THREADS ? GEMM_MAX_THREADS : threads;
    const int64_t chunk = chunk_of(lanes, k, span);
    if (chunk < k && lanes == LANES_PAIRS && chunk < 2) return BAD_ARGUMENT;
    const operand a = {x, x_code, x_rs, x_cs}, b = {y, y_code, y_rs, y_cs};
    const int64_t nr = nr_of(lanes), es = element_size(lanes);
    const int64_t yp_bytes = up((k + 1) / 2 * 2 * nr * es * ((m + nr - 1) / nr));
    const int64_t per_thread = up(MR * XS * es);
    /* a thread costs tens of microseconds: only products of many terms are split */
    const int64_t blocks = (n + MR - 1) / MR;
    if (threads > blocks) threads = blocks;
    if (n * k * m < ((int64_t)1 << 22)) threads = 1;
    if (work_bytes < ALIGN + yp_bytes + threads * per_thread) return BAD_ARGUMENT;
    char *base = (char *)(((uintptr_t)work + ALIGN - 1) / ALIGN * ALIGN);
    if (lanes == LANES_PAIRS)
        pairs_pack_y(&b, k, m, (int16_t *)base);
    else if (lanes == LANES_WORDS)
        words_pack_y(&b, k, m, (int32_t *)base);
    else
        wide_pack_y(&b, k, m, (int64_t *)base);
    task tasks[GEMM_MAX_THREADS];
    pthread_t th[GEMM_MAX_THREADS];
    int started[GEMM_MAX_THREADS] = {0};
    for (int64_t t = 0; t < threads; t++) { /* whole row blocks, as even as they come */
        char *own = base + yp_bytes + t * per_thread;
        tasks[t] = (task){lanes, {&a, k, m, chunk, blocks * t / threads * MR,
                                  blocks * (t + 1) / threads * MR, base, out, own}};
        if (tasks[t].jb.i1 > n) tasks[t].jb.i1 = n;
    }
    for (int64_t t = 1; t < threads; t++)
        started[t] = pthread_create(&th[t], NULL, run_task, &tasks[t]) == 0;
    for (int64_t t = 0; t < threads; t++) { /* a thread that could not start: its rows here */
        if (!started[t]) run_job(lanes, &tasks[t].jb);
    }
    for (int64_t t = 1; t < threads; t++) {
        if (started[t]) pthread_join(th[t], NULL);
    }
    return 0;
}
