/* test_util.c — util.c's shared helpers: atomic file replacement (the token cache, backup files,
 * the serve state file, spool offsets and schema caches all go through it), whole-file reads,
 * mkdir -p and JSON string literals. */
#include "zh.h"
#include "clickhouse.h"
#include "zt.h"
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void atomic_write_replaces_with_0600(void) {
    char dir[] = "/tmp/zh_util_test_XXXXXX";
    ZT_CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/token.json", dir);
    FILE *f = fopen(path, "w");
    fputs("old", f);
    fclose(f);
    chmod(path, 0644);
    struct stat before, after;
    stat(path, &before);
    char *err = NULL;
    ZT_EQ_INT(zh_write_atomic(path, "{\"token\":\"new\"}", 15, 0600, &err), 0);
    ZT_CHECK(err == NULL);
    ZT_EQ_INT(stat(path, &after), 0);
    ZT_EQ_INT(after.st_mode & 0777, 0600);
    ZT_CHECK(after.st_ino != before.st_ino); /* a new file renamed over the old one */
    ZT_EQ_INT(after.st_size, 15);
    ZT_EQ_INT(count_entries(dir), 1);       /* no temp file left behind */
    f = fopen(path, "r");
    char buf[64] = {0};
    fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    ZT_EQ_STR(buf, "{\"token\":\"new\"}");

    char bad[160];
    snprintf(bad, sizeof bad, "%s/missing-dir/token.json", dir);
    ZT_EQ_INT(zh_write_atomic(bad, "x", 1, 0600, &err), -1);
    ZT_CHECK(err && strstr(err, "missing-dir/token.json"));
    free(err);
    unlink(path);
    rmdir(dir);
}

static void atomic_file_streams_and_aborts(void) {
    char dir[] = "/tmp/zh_util_test_XXXXXX";
    ZT_CHECK(mkdtemp(dir) != NULL);
    char path[160];
    snprintf(path, sizeof path, "%s/a/b/data.bin", dir);
    zh_atomic_file f;
    char *err = NULL;
    /* parents are created; the file appears only at commit */
    ZT_EQ_INT(zh_atomic_open(&f, path, 0640, 0750, &err), 0);
    ZT_EQ_INT(zh_atomic_write(&f, "hello ", 6, &err), 0);
    ZT_EQ_INT(zh_atomic_write(&f, "world", 5, &err), 0);
    struct stat st;
    ZT_CHECK(stat(path, &st) != 0);
    ZT_EQ_INT(zh_atomic_commit(&f, &err), 0);
    ZT_EQ_INT(stat(path, &st), 0);
    ZT_EQ_INT(st.st_size, 11);
    ZT_EQ_INT(st.st_mode & 0777, 0640);
    char sub[160];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    ZT_EQ_INT(count_entries(sub), 1);
    /* an abort leaves the old file and no temporary */
    ZT_EQ_INT(zh_atomic_open(&f, path, 0640, 0, &err), 0);
    ZT_EQ_INT(zh_atomic_write(&f, "x", 1, &err), 0);
    zh_atomic_abort(&f);
    ZT_EQ_INT(stat(path, &st), 0);
    ZT_EQ_INT(st.st_size, 11);
    ZT_EQ_INT(count_entries(sub), 1);
    ZT_CHECK(err == NULL);
    unlink(path);
    rmdir(sub);
    snprintf(sub, sizeof sub, "%s/a", dir);
    rmdir(sub);
    rmdir(dir);
}

static void mkdirs_creates_parents(void) {
    char dir[] = "/tmp/zh_util_test_XXXXXX";
    ZT_CHECK(mkdtemp(dir) != NULL);
    char p[160];
    snprintf(p, sizeof p, "%s/x/y/z", dir);
    ZT_EQ_INT(zh_mkdirs(p, 0700), 0);
    struct stat st;
    ZT_EQ_INT(stat(p, &st), 0);
    ZT_CHECK(S_ISDIR(st.st_mode));
    ZT_EQ_INT(zh_mkdirs(p, 0700), 0); /* already there */
    char file[170];
    snprintf(file, sizeof file, "%s/f", p);
    FILE *fp = fopen(file, "w");
    fclose(fp);
    char under[180];
    snprintf(under, sizeof under, "%s/g", file);
    ZT_EQ_INT(zh_mkdirs(under, 0700), -1); /* a file in the way */
    ZT_EQ_INT(errno, ENOTDIR);
    unlink(file);
    rmdir(p);
    snprintf(p, sizeof p, "%s/x/y", dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/x", dir);
    rmdir(p);
    rmdir(dir);
}

static void read_whole_files(void) {
    char dir[] = "/tmp/zh_util_test_XXXXXX";
    ZT_CHECK(mkdtemp(dir) != NULL);
    char path[160];
    snprintf(path, sizeof path, "%s/f.txt", dir);
    char *err = NULL;
    char big[40000];
    memset(big, 'z', sizeof big);
    ZT_EQ_INT(zh_write_atomic(path, big, sizeof big, 0600, &err), 0);
    size_t len = 0;
    char *t = zh_read_file(path, 0, &len);
    ZT_CHECK(t != NULL);
    ZT_EQ_INT(len, sizeof big);
    if (t) ZT_EQ_INT(t[len], 0); /* NUL after the bytes */
    free(t);
    ZT_CHECK(zh_read_file(path, 1000, &len) == NULL); /* over the limit */
    ZT_EQ_INT(errno, EFBIG);
    snprintf(path, sizeof path, "%s/none", dir);
    ZT_CHECK(zh_read_file(path, 0, &len) == NULL);
    ZT_EQ_INT(errno, ENOENT);
    snprintf(path, sizeof path, "%s/f.txt", dir);
    unlink(path);
    rmdir(dir);
}

static void json_string_literals(void) {
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_json_str(&b, "a\"b\\c\n\t\x01</script>é");
    ZT_EQ_STR(zh_buf_cstr(&b), "\"a\\\"b\\\\c\\n\\t\\u0001\\u003c/script>é\"");
    b.len = 0;
    zh_buf_json_str(&b, NULL);
    ZT_EQ_STR(zh_buf_cstr(&b), "\"\"");
    zh_buf_free(&b);
}

static void tsv_rows_undo_clickhouse_escapes(void) {
    const char *text = "a\\tb\tx\\\\y\t\\N\tq\\nr\\0s\n\nlast";
    const char *p = text, *end = text + strlen(text);
    zh_buf f[3];
    for (int i = 0; i < 3; i++) zh_buf_init(&f[i]);
    ZT_EQ_INT(zh_tsv_row(&p, end, f, 3), 4); /* 4 fields, the last one read and dropped */
    ZT_EQ_STR(f[0].data, "a\tb");
    ZT_EQ_STR(f[1].data, "x\\y");
    ZT_EQ_STR(f[2].data, "N");
    ZT_EQ_INT(zh_tsv_row(&p, end, f, 3), 1); /* an empty line is one empty field */
    ZT_EQ_STR(f[0].data, "");
    ZT_EQ_INT(zh_tsv_row(&p, end, f, 3), 1);
    ZT_EQ_STR(f[0].data, "last");
    ZT_EQ_INT(zh_tsv_row(&p, end, f, 3), -1);
    bool eol;
    const char *q = "q\\nr\\0s";
    zh_buf one;
    zh_buf_init(&one);
    zh_ch_tsv_field(q, q + strlen(q), &one, &eol);
    ZT_EQ_INT(one.len, 5);
    ZT_CHECK(eol && !memcmp(one.data, "q\nr\0s", 5));
    zh_buf_free(&one);
    for (int i = 0; i < 3; i++) zh_buf_free(&f[i]);
}

/* zh_buf_map: a batch buffer moved to a 2 MiB-aligned mapping keeps its bytes, grows (staying
 * mapped) past its size, and is unmapped by zh_buf_free; heap buffers are untouched by it. */
static void buffers_move_to_huge_page_mappings(void) {
    zh_buf b;
    zh_buf_init(&b);
    ZT_CHECK(!b.mapped);
    for (int i = 0; i < 1000; i++) zh_buf_printf(&b, "row %d\n", i);
    size_t len = b.len;
    char *copy = zh_xstrndup(b.data, b.len);
    zh_buf_map(&b, 3u << 20);
    ZT_CHECK(b.mapped);
    ZT_EQ_INT(((uintptr_t)b.data) % (2u << 20), 0);
    ZT_EQ_INT(b.cap, 4u << 20); /* whole 2 MiB pages */
    ZT_EQ_INT(b.len, len);
    ZT_CHECK(!memcmp(b.data, copy, len) && b.data[len] == 0);
    /* asking again for no more is a no-op; growing past the mapping stays mapped and keeps the bytes */
    char *was = b.data;
    zh_buf_map(&b, 1u << 20);
    ZT_CHECK(b.data == was);
    size_t big = (5u << 20);
    char *fill = zh_xmalloc(big);
    memset(fill, 'x', big);
    zh_buf_add(&b, fill, big);
    ZT_CHECK(b.mapped);
    ZT_CHECK(b.cap >= len + big + 1);
    ZT_EQ_INT(b.cap % (2u << 20), 0);
    ZT_CHECK(!memcmp(b.data, copy, len) && b.data[len] == 'x' && b.data[len + big - 1] == 'x' && b.data[len + big] == 0);
    /* a struct copy carries the mapping with it (the sink hands batches to requests by value) */
    zh_buf other = b;
    zh_buf_init(&b);
    ZT_CHECK(other.mapped && !b.mapped);
    zh_buf_free(&other);
    ZT_CHECK(!other.data && !other.mapped && !other.cap);
    free(fill);
    free(copy);
    /* $ZHOST_HUGE_PAGES=0 keeps buffers on the heap */
    setenv("ZHOST_HUGE_PAGES", "0", 1);
    zh_buf h;
    zh_buf_init(&h);
    zh_buf_adds(&h, "rows");
    zh_buf_map(&h, 3u << 20);
    ZT_CHECK(!h.mapped && h.len == 4 && !strcmp(h.data, "rows"));
    zh_buf_free(&h);
    unsetenv("ZHOST_HUGE_PAGES");
}

int main(void) {
    ZT_RUN(tsv_rows_undo_clickhouse_escapes);
    ZT_RUN(atomic_write_replaces_with_0600);
    ZT_RUN(atomic_file_streams_and_aborts);
    ZT_RUN(mkdirs_creates_parents);
    ZT_RUN(read_whole_files);
    ZT_RUN(json_string_literals);
    ZT_RUN(buffers_move_to_huge_page_mappings);
    return ZT_DONE();
}
