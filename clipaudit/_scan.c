/* clipaudit._scan: the curated matcher's automaton pass, compiled.
 *
 * An Aho-Corasick automaton over byte keys, turned into a dense DFA (one transition per state and
 * symbol, so the scan does one table load per byte and never follows a failure link), and a scan
 * that returns every hit of a text as flat int64 pairs (end offset, key index), in the order
 * pyahocorasick's Automaton.iter yields them: by end offset, the longest key first. The pure
 * Python route (pyahocorasick) is the fallback when this module was not built; both give the same
 * pairs (tests/test_lexical.py).
 *
 *   build(keys: sequence of bytes) -> the automaton's tables, in a capsule
 *   scan(tables, text: bytes-like) -> bytes of int64 pairs
 *   non_ascii(captions: list of str, index) -> (positions of the non-ASCII captions that the
 *     fold table cannot fold, positions of every non-ASCII caption)
 *   ampersands(captions: list of str) -> positions of the captions that hold an "&" (where an
 *     HTML character reference may be)
 *   crc32(captions, positions: int64 buffer) -> zlib.crc32 of the UTF-8 of each caption named
 *   prepare(captions, folded, index, blob, table, kinds, hyphen, dash) -> (...): a batch's
 *     normalisation (clipaudit.lexical._prepare)
 *
 * Nothing here needs numpy: hits travel as bytes, which the caller views as arrays; the tables
 * stay in a capsule that only build() makes, so scan() reads nothing a caller could have forged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define EMITS 0x80000000u

/* symbols: byte -> symbol (0: a byte that no key holds); delta: n_states x n_symbols; outputs:
 * the key that ends at a state (-1: none); links: the nearest state on the failure chain with an
 * output (0: none; the root holds no output, since keys are not empty). */

/* The automaton build() makes, held by a capsule: only build() makes one, so scan() trusts it. */
typedef struct {
    uint8_t symbols[256];
    uint32_t *delta;   /* n_states x n_symbols */
    int32_t *outputs;  /* the key that ends at a state (-1: none) */
    int32_t *links;    /* the nearest state with an output on the failure chain (0: none) */
    Py_ssize_t n_states, n_symbols;
} Tables;

#define TABLES "clipaudit._scan.tables"

static void tables_free(PyObject *capsule) {
    Tables *tables = PyCapsule_GetPointer(capsule, TABLES);
    if (tables == NULL) return;
    PyMem_Free(tables->delta);
    PyMem_Free(tables->outputs);
    PyMem_Free(tables->links);
    PyMem_Free(tables);
}

static PyObject *build(PyObject *self, PyObject *args) {
    PyObject *keys_arg;
    if (!PyArg_ParseTuple(args, "O", &keys_arg)) return NULL;
    PyObject *keys = PySequence_Fast(keys_arg, "keys must be a sequence of bytes");
    if (keys == NULL) return NULL;
    Py_ssize_t n_keys = PySequence_Fast_GET_SIZE(keys);
    if (n_keys >= INT32_MAX) {
        Py_DECREF(keys);
        return PyErr_Format(PyExc_ValueError, "too many keys: %zd", n_keys);
    }
    uint8_t symbols[256] = {0};
    int32_t n_symbols = 1;
    Py_ssize_t max_states = 1;
    for (Py_ssize_t k = 0; k < n_keys; k++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, k);
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) == 0) {
            Py_DECREF(keys);
            return PyErr_Format(PyExc_ValueError, "key %zd is not a non-empty bytes object", k);
        }
        const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(key);
        for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(key); i++) {
            if (symbols[data[i]] == 0) {
                if (n_symbols == 255) {
                    Py_DECREF(keys);
                    return PyErr_Format(PyExc_ValueError, "keys use more than 254 byte values");
                }
                symbols[data[i]] = (uint8_t)n_symbols++;
            }
        }
        max_states += PyBytes_GET_SIZE(key);
    }
    if (max_states >= INT32_MAX / n_symbols) {
        Py_DECREF(keys);
        return PyErr_Format(PyExc_ValueError, "keys too long: %zd bytes", max_states);
    }
    int32_t *delta = PyMem_Malloc(sizeof(int32_t) * max_states * n_symbols);
    int32_t *outputs = PyMem_Malloc(sizeof(int32_t) * max_states);
    int32_t *links = PyMem_Malloc(sizeof(int32_t) * max_states);
    int32_t *fail = PyMem_Malloc(sizeof(int32_t) * max_states);
    int32_t *queue = PyMem_Malloc(sizeof(int32_t) * max_states);
    int32_t *number = NULL, *ordered = NULL;
    PyObject *result = NULL;
    if (!delta || !outputs || !links || !fail || !queue) {
        PyErr_NoMemory();
        goto done;
    }
    /* the trie: -1 where no key continues */
    for (Py_ssize_t i = 0; i < max_states * n_symbols; i++) delta[i] = -1;
    for (Py_ssize_t i = 0; i < max_states; i++) outputs[i] = -1;
    int32_t n_states = 1;
    for (Py_ssize_t k = 0; k < n_keys; k++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, k);
        const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(key);
        int32_t state = 0;
        for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(key); i++) {
            int32_t *next = &delta[(Py_ssize_t)state * n_symbols + symbols[data[i]]];
            if (*next < 0) *next = n_states++;
            state = *next;
        }
        if (outputs[state] >= 0) {
            PyErr_Format(PyExc_ValueError, "key %zd repeats key %d", k, outputs[state]);
            goto done;
        }
        outputs[state] = (int32_t)k;
    }
    /* breadth first: a state's failure state is shallower, so its row is complete when read */
    Py_ssize_t head = 0, tail = 0;
    fail[0] = 0;
    links[0] = 0;
    for (int32_t a = 0; a < n_symbols; a++) {
        int32_t child = delta[a];
        if (child < 0) {
            delta[a] = 0;
        } else {
            fail[child] = 0;
            links[child] = 0;
            queue[tail++] = child;
        }
    }
    while (head < tail) {
        int32_t state = queue[head++];
        int32_t *row = &delta[(Py_ssize_t)state * n_symbols];
        const int32_t *fail_row = &delta[(Py_ssize_t)fail[state] * n_symbols];
        for (int32_t a = 0; a < n_symbols; a++) {
            int32_t child = row[a];
            if (child < 0) {
                row[a] = fail_row[a];
            } else {
                int32_t f = fail_row[a];
                fail[child] = f;
                links[child] = outputs[f] >= 0 ? f : links[f];
                queue[tail++] = child;
            }
        }
    }
    /* states renumbered breadth first, shallow ones (most of a scan's steps) together in the
     * table; a transition into a state with an output, or one on its failure chain, carries the
     * EMITS bit, so the scan reads one table entry per byte and looks further only on a hit */
    number = PyMem_Malloc(sizeof(int32_t) * n_states);
    ordered = PyMem_Malloc(sizeof(int32_t) * (Py_ssize_t)n_states * n_symbols);
    if (!number || !ordered) {
        PyErr_NoMemory();
        goto done;
    }
    number[0] = 0;
    for (Py_ssize_t j = 0; j < tail; j++) number[queue[j]] = (int32_t)(j + 1);
    for (int32_t state = 0; state < n_states; state++) {
        const int32_t *row = &delta[(Py_ssize_t)state * n_symbols];
        int32_t *moved = &ordered[(Py_ssize_t)number[state] * n_symbols];
        for (int32_t a = 0; a < n_symbols; a++) {
            int32_t target = row[a];
            uint32_t flag = outputs[target] >= 0 || links[target] ? EMITS : 0;
            moved[a] = (int32_t)((uint32_t)number[target] | flag);
        }
        fail[number[state]] = outputs[state];  /* fail is free now: the outputs, renumbered */
        queue[number[state]] = links[state] ? number[links[state]] : 0;
    }
    memcpy(outputs, fail, sizeof(int32_t) * n_states);
    memcpy(links, queue, sizeof(int32_t) * n_states);
    Tables *tables = PyMem_Malloc(sizeof(Tables));
    if (tables == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(tables->symbols, symbols, 256);
    tables->delta = (uint32_t *)ordered;
    tables->outputs = outputs;
    tables->links = links;
    tables->n_states = n_states;
    tables->n_symbols = n_symbols;
    result = PyCapsule_New(tables, TABLES, tables_free);
    if (result == NULL) {
        PyMem_Free(tables);
        goto done;
    }
    ordered = NULL;  /* the capsule owns them now */
    outputs = links = NULL;
done:
    PyMem_Free(delta);
    PyMem_Free(outputs);
    PyMem_Free(links);
    PyMem_Free(fail);
    PyMem_Free(queue);
    PyMem_Free(number);
    PyMem_Free(ordered);
    Py_DECREF(keys);
    return result;
}

/* The hits of one lane of a scan, grown as they come (without the GIL: malloc, not PyMem). */
typedef struct {
    int64_t *pairs;
    Py_ssize_t n, capacity;
} Hits;

/* Record the keys that end at ``at`` in ``state``: its own, then those on its failure chain. */
static int emit(Hits *hits, const int32_t *out, const int32_t *link, uint32_t state,
                Py_ssize_t at) {
    for (int32_t t = out[state] >= 0 ? (int32_t)state : link[state]; t; t = link[t]) {
        if (hits->n == hits->capacity) {
            Py_ssize_t capacity = hits->capacity ? 2 * hits->capacity : 1024;
            int64_t *grown = realloc(hits->pairs, sizeof(int64_t) * 2 * capacity);
            if (grown == NULL) return -1;
            hits->pairs = grown;
            hits->capacity = capacity;
        }
        hits->pairs[2 * hits->n] = at;
        hits->pairs[2 * hits->n + 1] = out[t];
        hits->n++;
    }
    return 0;
}

/* The text is cut into LANES pieces, each after a "\n" (a byte in no key, which takes every
 * state back to the root), and the pieces are scanned in one loop, a byte of each per step: the
 * table reads of one piece wait on each other, those of different pieces do not. */
#define LANES 4

static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *capsule;
    Py_buffer text;
    if (!PyArg_ParseTuple(args, "Oy*", &capsule, &text)) return NULL;
    PyObject *result = NULL;
    Hits lanes[LANES] = {{0}};
    Tables *tables = PyCapsule_GetPointer(capsule, TABLES);  /* only build() makes one */
    if (tables == NULL) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "scan() takes the tables build() returned");
        goto release;
    }
    Py_ssize_t n_symbols = tables->n_symbols;
    const uint8_t *sym = tables->symbols, *chars = text.buf;
    const uint32_t *next = tables->delta;
    const int32_t *out = tables->outputs, *link = tables->links;
    Py_ssize_t bounds[LANES + 1];
    bounds[0] = 0;
    for (int k = 1; k <= LANES; k++) {
        Py_ssize_t from = text.len * k / LANES;
        if (from < bounds[k - 1]) from = bounds[k - 1];
        const uint8_t *cut = k < LANES && sym['\n'] == 0 && from < text.len
                                 ? memchr(chars + from, '\n', text.len - from)
                                 : NULL;
        bounds[k] = cut ? cut - chars + 1 : text.len;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    uint32_t states[LANES] = {0};
    Py_ssize_t together = text.len;
    for (int k = 0; k < LANES; k++) {
        if (bounds[k + 1] - bounds[k] < together) together = bounds[k + 1] - bounds[k];
    }
    for (Py_ssize_t j = 0; j < together && !failed; j++) {
        for (int k = 0; k < LANES; k++) {
            Py_ssize_t i = bounds[k] + j;
            uint32_t entry = next[(Py_ssize_t)states[k] * n_symbols + sym[chars[i]]];
            states[k] = entry & ~EMITS;
            if ((entry & EMITS) && emit(&lanes[k], out, link, states[k], i)) failed = 1;
        }
    }
    for (int k = 0; k < LANES && !failed; k++) {
        for (Py_ssize_t i = bounds[k] + together; i < bounds[k + 1]; i++) {
            uint32_t entry = next[(Py_ssize_t)states[k] * n_symbols + sym[chars[i]]];
            states[k] = entry & ~EMITS;
            if ((entry & EMITS) && emit(&lanes[k], out, link, states[k], i)) {
                failed = 1;
                break;
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto release;
    }
    Py_ssize_t n = 0;
    for (int k = 0; k < LANES; k++) n += lanes[k].n;
    result = PyBytes_FromStringAndSize(NULL, sizeof(int64_t) * 2 * n);
    if (result != NULL) {
        char *into = PyBytes_AS_STRING(result);
        for (int k = 0; k < LANES; k++) {
            if (lanes[k].n == 0) continue;
            memcpy(into, lanes[k].pairs, sizeof(int64_t) * 2 * lanes[k].n);
            into += sizeof(int64_t) * 2 * lanes[k].n;
        }
    }
release:
    for (int k = 0; k < LANES; k++) free(lanes[k].pairs);
    PyBuffer_Release(&text);
    return result;
}

/* A fold table (clipaudit.lexical._fold_tables): for each code point below its length, the ASCII
 * text it folds to, as (offset << 5 | length) into a blob of bytes; FOLD_NONE where the table does
 * not fold the code point, which Python then folds with its caption. */
#define FOLD_NONE 0xFFFFFFFFu

/* A str object, ready for the PyUnicode_KIND/DATA macros: a string made through the legacy
 * PyUnicode_FromUnicode API (Python < 3.12) may not be yet; 0, or -1 with an error set. */
static int ready_text(PyObject *text, Py_ssize_t position) {
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "caption %zd is %.100s, not text", position,
                     Py_TYPE(text)->tp_name);
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) return -1;
#endif
    return 0;
}

/* The length of a non-ASCII caption folded by the table, or -1 when a code point is not in it. */
static Py_ssize_t folded_length(PyObject *caption, const uint32_t *index, Py_ssize_t limit) {
    int kind = PyUnicode_KIND(caption);
    const void *data = PyUnicode_DATA(caption);
    Py_ssize_t n = PyUnicode_GET_LENGTH(caption), length = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        if (cp < 128) {
            length++;
        } else if (cp < (Py_UCS4)limit && index[cp] != FOLD_NONE) {
            length += index[cp] & 31;
        } else {
            return -1;
        }
    }
    return length;
}

/* Fold a caption that folded_length() measured into ``out``: ASCII, lower case, a "\0" kept, as
 * clipaudit.lexical._fold_each folds it. */
static void fold_into(PyObject *caption, const uint32_t *index, const uint8_t *blob, uint8_t *out) {
    int kind = PyUnicode_KIND(caption);
    const void *data = PyUnicode_DATA(caption);
    Py_ssize_t n = PyUnicode_GET_LENGTH(caption);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        if (cp < 128) {  /* lower case, as Python's folding lower-cases the whole caption */
            *out++ = (uint8_t)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        } else {
            uint32_t entry = index[cp];
            memcpy(out, blob + (entry >> 5), entry & 31);
            out += entry & 31;
        }
    }
}

/* Check a fold table's buffers: every entry within the blob. */
static int fold_table_valid(const Py_buffer *index, const Py_buffer *blob) {
    if (index->len % sizeof(uint32_t)) return 0;
    const uint32_t *entries = index->buf;
    for (Py_ssize_t i = 0; i < index->len / (Py_ssize_t)sizeof(uint32_t); i++) {
        if (entries[i] != FOLD_NONE && (Py_ssize_t)((entries[i] >> 5) + (entries[i] & 31)) > blob->len)
            return 0;
    }
    return 1;
}

/* Append position i to list; returns -1 (list cleared) on failure. */
static int append_position(PyObject **list, Py_ssize_t i) {
    PyObject *position = PyLong_FromSsize_t(i);
    int failed = position == NULL || PyList_Append(*list, position) < 0;
    Py_XDECREF(position);
    if (failed) Py_CLEAR(*list);
    return failed ? -1 : 0;
}

/* non_ascii(captions: list of str, index) -> (unfoldable, all): the positions of the captions
 * that are not ASCII and that the fold table cannot fold (clipaudit.lexical folds them before
 * prepare), and of every caption that is not ASCII (whose case the batch's folding drops) */
static PyObject *non_ascii(PyObject *self, PyObject *args) {
    PyObject *captions_arg;
    Py_buffer index;
    if (!PyArg_ParseTuple(args, "Oy*", &captions_arg, &index)) return NULL;
    PyObject *unfoldable = NULL, *every = NULL, *result = NULL;
    PyObject *captions = PySequence_Fast(captions_arg, "captions must be a sequence of str");
    if (captions == NULL) goto release;
    unfoldable = PyList_New(0);
    every = PyList_New(0);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(captions);
    Py_ssize_t limit = index.len / (Py_ssize_t)sizeof(uint32_t);
    for (Py_ssize_t i = 0; unfoldable != NULL && every != NULL && i < n; i++) {
        PyObject *caption = PySequence_Fast_GET_ITEM(captions, i);
        if (ready_text(caption, i) < 0) {
            Py_CLEAR(unfoldable);
        } else if (!PyUnicode_IS_ASCII(caption)) {
            if (append_position(&every, i) < 0) break;
            if (folded_length(caption, index.buf, limit) < 0) append_position(&unfoldable, i);
        }
    }
    Py_DECREF(captions);
    if (unfoldable != NULL && every != NULL) result = PyTuple_Pack(2, unfoldable, every);
release:
    Py_XDECREF(unfoldable);
    Py_XDECREF(every);
    PyBuffer_Release(&index);
    return result;
}

/* The batch text as prepare() writes it. */
typedef struct {
    uint8_t *text, *capitals, *marked;
    int64_t *marks, *newlines;
    Py_ssize_t length, n_marks, n_newlines;
} Batch;

/* Append a translated byte: a space after a space is dropped (runs of spaces become one). A word
 * that begins with an upper-case letter has its first offset's bit set in ``capitals``. */
static inline void put(Batch *batch, uint8_t c, uint8_t upper) {
    if (c != ' ' || batch->text[batch->length - 1] != ' ') {
        if (upper && batch->text[batch->length - 1] == ' ')
            batch->capitals[batch->length >> 3] |= (uint8_t)(1u << (batch->length & 7));
        batch->text[batch->length++] = c;
    }
}

/* Append one caption's bytes (ASCII): translated by ``to`` (a "\0" is a space), with the marks
 * ``kind_of`` gives; a caption always stands between spaces (the batch's padding, the joiner). */
static void put_caption(Batch *batch, const uint8_t *in, Py_ssize_t n, const uint8_t *to,
                        const uint8_t *kind_of, uint8_t hyphen, uint8_t dash) {
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = in[i] ? to[in[i]] : ' ';
        put(batch, c, (uint8_t)(in[i] - 'A') < 26);
        uint8_t kind = in[i] ? kind_of[in[i]] : 0;
        if (kind == 0) continue;
        if (kind == hyphen) {
            int before = i == 0 || !in[i - 1] || to[in[i - 1]] == ' ';
            int after = i + 1 == n || !in[i + 1] || to[in[i + 1]] == ' ';
            if (!(before || after)) continue;
            kind = dash;
        }
        /* a marked byte translates to a space: the mark is where that space now stands */
        int64_t at = batch->length - 1;
        if (batch->n_marks && batch->marks[batch->n_marks - 1] == at) {
            batch->marked[batch->n_marks - 1] |= kind;
        } else {
            batch->marks[batch->n_marks] = at;
            batch->marked[batch->n_marks++] = kind;
        }
    }
}

/* prepare(captions, folded, index, blob, table, kinds, hyphen, dash) -> (text, marks, marked,
 * newlines, capitals)
 *
 * The batch normalisation of clipaudit.lexical._prepare in one pass: the captions (each ASCII
 * one as it is, each other one folded by the fold table ``index``/``blob`` where it holds all its
 * code points, else replaced by the next of ``folded``, ASCII) padded with a space
 * and joined by " \n ", each byte translated by ``table`` (256 bytes), runs of spaces made one,
 * and the bytes that ``kinds`` (256 bytes) gives a kind recorded as marks: the offset in
 * ``text`` of the space each became (int64, ``marks``), with the kinds of every mark at that
 * offset or-ed (uint8, ``marked``), the offsets of the "\n"s (int64), and a bit for each byte of
 * ``text`` (little-endian within a byte), set where a word begins with an upper-case letter
 * (``capitals``; a folded caption has none). A byte of kind ``hyphen`` is a mark of kind ``dash`` when a
 * space stands beside it after translation, and no mark otherwise. */
static PyObject *prepare(PyObject *self, PyObject *args) {
    PyObject *captions_arg, *folded_arg;
    Py_buffer index, blob, table, kinds;
    unsigned char hyphen, dash;
    if (!PyArg_ParseTuple(args, "OOy*y*y*y*bb", &captions_arg, &folded_arg, &index, &blob, &table,
                          &kinds, &hyphen, &dash))
        return NULL;
    PyObject *result = NULL, *captions = NULL, *folded = NULL;
    Batch batch = {0};
    uint8_t *scratch = NULL;
    Py_ssize_t *lengths = NULL;
    const uint32_t *entries = index.buf;
    Py_ssize_t limit = index.len / (Py_ssize_t)sizeof(uint32_t), longest = 0;
    if (table.len != 256 || kinds.len != 256) {
        PyErr_SetString(PyExc_ValueError, "table and kinds must hold 256 bytes each");
        goto release;
    }
    if (!fold_table_valid(&index, &blob)) {
        PyErr_SetString(PyExc_ValueError, "a fold table that _fold_tables() did not make");
        goto release;
    }
    captions = PySequence_Fast(captions_arg, "captions must be a sequence of str");
    folded = captions ? PySequence_Fast(folded_arg, "folded must be a sequence of str") : NULL;
    if (folded == NULL) goto release;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(captions), n_folded = 0, size = 2;
    /* each caption's text, and its folded length when the table folds it here (else -1) */
    PyObject **texts = PyMem_Malloc(sizeof(PyObject *) * (n ? n : 1));
    lengths = PyMem_Malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    if (texts == NULL || lengths == NULL) {
        PyErr_NoMemory();
        goto free_texts;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *caption = PySequence_Fast_GET_ITEM(captions, i);
        if (ready_text(caption, i) < 0) goto free_texts;
        lengths[i] = -1;
        if (!PyUnicode_IS_ASCII(caption) &&
            (lengths[i] = folded_length(caption, entries, limit)) >= 0) {
            texts[i] = caption;
            size += lengths[i] + 3;
            if (lengths[i] > longest) longest = lengths[i];
            continue;
        }
        if (!PyUnicode_IS_ASCII(caption)) {
            if (n_folded == PySequence_Fast_GET_SIZE(folded)) {
                PyErr_SetString(PyExc_ValueError, "fewer folded captions than non-ASCII ones");
                goto free_texts;
            }
            caption = PySequence_Fast_GET_ITEM(folded, n_folded++);
            if (ready_text(caption, i) < 0) goto free_texts;
            if (!PyUnicode_IS_ASCII(caption)) {
                PyErr_SetString(PyExc_ValueError, "a folded caption is not ASCII text");
                goto free_texts;
            }
        }
        texts[i] = caption;
        size += PyUnicode_GET_LENGTH(caption) + 3;
    }
    if (n_folded != PySequence_Fast_GET_SIZE(folded)) {
        PyErr_SetString(PyExc_ValueError, "more folded captions than non-ASCII ones");
        goto free_texts;
    }
    batch.text = PyMem_Malloc(size);
    batch.capitals = PyMem_Calloc(size / 8 + 1, 1);
    batch.marks = PyMem_Malloc(sizeof(int64_t) * size);
    batch.marked = PyMem_Malloc(size);
    batch.newlines = PyMem_Malloc(sizeof(int64_t) * (n ? n : 1));
    scratch = PyMem_Malloc(longest ? longest : 1);
    if (!batch.text || !batch.capitals || !batch.marks || !batch.marked || !batch.newlines ||
        !scratch) {
        PyErr_NoMemory();
        goto free_texts;
    }
    const uint8_t *to = table.buf, *kind_of = kinds.buf;
    batch.text[batch.length++] = ' ';
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i) {
            put(&batch, ' ', 0);
            batch.newlines[batch.n_newlines++] = batch.length;
            put(&batch, '\n', 0);
            put(&batch, ' ', 0);
        }
        if (lengths[i] >= 0) {
            fold_into(texts[i], entries, blob.buf, scratch);
            put_caption(&batch, scratch, lengths[i], to, kind_of, hyphen, dash);
        } else {
            put_caption(&batch, PyUnicode_1BYTE_DATA(texts[i]), PyUnicode_GET_LENGTH(texts[i]),
                        to, kind_of, hyphen, dash);
        }
    }
    put(&batch, ' ', 0);
    result = Py_BuildValue("(y#y#y#y#y#)", (const char *)batch.text, batch.length,
                           (const char *)batch.marks, (Py_ssize_t)sizeof(int64_t) * batch.n_marks,
                           (const char *)batch.marked, batch.n_marks, (const char *)batch.newlines,
                           (Py_ssize_t)sizeof(int64_t) * batch.n_newlines,
                           (const char *)batch.capitals, batch.length / 8 + 1);
free_texts:
    PyMem_Free(texts);
release:
    PyMem_Free(lengths);
    PyMem_Free(scratch);
    PyMem_Free(batch.text);
    PyMem_Free(batch.capitals);
    PyMem_Free(batch.marks);
    PyMem_Free(batch.marked);
    PyMem_Free(batch.newlines);
    Py_XDECREF(captions);
    Py_XDECREF(folded);
    PyBuffer_Release(&index);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&table);
    PyBuffer_Release(&kinds);
    return result;
}

/* ampersands(captions: list of str) -> list of the positions of the captions that hold an "&"
 * (clipaudit.lexical decodes their HTML character references before prepare) */
static PyObject *ampersands(PyObject *self, PyObject *args) {
    PyObject *captions_arg;
    if (!PyArg_ParseTuple(args, "O", &captions_arg)) return NULL;
    PyObject *captions = PySequence_Fast(captions_arg, "captions must be a sequence of str");
    if (captions == NULL) return NULL;
    PyObject *found = PyList_New(0);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(captions);
    for (Py_ssize_t i = 0; found != NULL && i < n; i++) {
        PyObject *caption = PySequence_Fast_GET_ITEM(captions, i);
        Py_ssize_t at = ready_text(caption, i) < 0
            ? -2
            : PyUnicode_FindChar(caption, '&', 0, PyUnicode_GET_LENGTH(caption), 1);
        if (at == -2) {
            Py_CLEAR(found);
        } else if (at >= 0) {
            PyObject *position = PyLong_FromSsize_t(i);
            if (position == NULL || PyList_Append(found, position) < 0) Py_CLEAR(found);
            Py_XDECREF(position);
        }
    }
    Py_DECREF(captions);
    return found;
}

/* crc32(captions: list of str, positions: int64 buffer) -> bytes of uint32: the CRC-32 of the
 * UTF-8 of each caption named, zlib.crc32's (the reflected IEEE polynomial), eight bytes a step.
 * Written out rather than linked: zlib's headers are not assumed where the package is built, and
 * a call to zlib.crc32 per caption costs more than the checksum of a caption. */
static uint32_t crc_table[8][256];

static void crc_tables(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++) {
        for (int t = 1; t < 8; t++) {
            uint32_t c = crc_table[t - 1][b];
            crc_table[t][b] = crc_table[0][c & 0xFF] ^ (c >> 8);
        }
    }
}

static uint32_t crc32_of(const uint8_t *p, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static PyObject *crc32(PyObject *self, PyObject *args) {
    PyObject *captions_arg;
    Py_buffer positions;
    if (!PyArg_ParseTuple(args, "Oy*", &captions_arg, &positions)) return NULL;
    PyObject *result = NULL;
    PyObject *captions = PySequence_Fast(captions_arg, "captions must be a sequence of str");
    if (captions == NULL) goto release;
    Py_ssize_t n = positions.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *at = positions.buf;
    result = PyBytes_FromStringAndSize(NULL, sizeof(uint32_t) * n);
    if (result == NULL) goto release;
    uint32_t *crcs = (uint32_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (at[i] < 0 || at[i] >= PySequence_Fast_GET_SIZE(captions)) {
            PyErr_Format(PyExc_IndexError, "caption position %lld out of range", (long long)at[i]);
            Py_CLEAR(result);
            break;
        }
        PyObject *caption = PySequence_Fast_GET_ITEM(captions, at[i]);
        if (ready_text(caption, at[i]) < 0) {
            Py_CLEAR(result);
            break;
        }
        if (PyUnicode_IS_ASCII(caption)) {
            crcs[i] = crc32_of(PyUnicode_1BYTE_DATA(caption), PyUnicode_GET_LENGTH(caption));
            continue;
        }
        /* encoded and dropped: PyUnicode_AsUTF8AndSize would keep a copy on every caption */
        PyObject *utf8 = PyUnicode_AsUTF8String(caption);
        if (utf8 == NULL) {  /* not encodable (a lone surrogate), as str.encode */
            Py_CLEAR(result);
            break;
        }
        crcs[i] = crc32_of((const uint8_t *)PyBytes_AS_STRING(utf8), PyBytes_GET_SIZE(utf8));
        Py_DECREF(utf8);
    }
release:
    Py_XDECREF(captions);
    PyBuffer_Release(&positions);
    return result;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, "build(keys) -> tables (a capsule)"},
    {"scan", scan, METH_VARARGS, "scan(tables, text) -> int64 pairs"},
    {"non_ascii", non_ascii, METH_VARARGS, "non_ascii(captions, index) -> (unfoldable, every)"},
    {"ampersands", ampersands, METH_VARARGS, "ampersands(captions) -> positions"},
    {"crc32", crc32, METH_VARARGS, "crc32(captions, positions) -> uint32 CRC-32 of each"},
    {"prepare", prepare, METH_VARARGS,
     "prepare(captions, folded, index, blob, table, kinds, hyphen, dash) -> (text, marks, marked, "
     "newlines, capitals)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void) {
    crc_tables();
    return PyModule_Create(&module);
}
