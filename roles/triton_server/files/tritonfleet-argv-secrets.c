/*
 * tritonfleet-argv-secrets: hand tritonserver a secret on its command line without showing it there.
 *
 * tritonserver takes its admin key only as an argument (--http-restricted-api=<apis>:<header>=<key>, and the same
 * for gRPC), and a process's arguments are public: any local user reads them in `ps` and /proc/<pid>/cmdline, and
 * `docker inspect` shows a container's. So the role gives tritonserver a reference instead of the key,
 *
 *     --http-restricted-api=model-repository,...:tritonfleet-admin-key=${file:/run/secrets/tritonfleet-admin-key}
 *
 * and loads this library into it (LD_PRELOAD). Before main() runs, its constructor replaces each `${file:PATH}` in
 * the arguments with the content of PATH (without its trailing newline) in copies on the heap, and points argv at
 * the copies: main() and getopt see the key; /proc/<pid>/cmdline, which the kernel reads from the original strings,
 * still shows the reference.
 *
 * It acts only in a program named tritonserver (argv[0]'s last path component): a wrapper that execs tritonserver
 * (the swarm entrypoint) must pass the reference on, not the key. A reference it cannot resolve (a missing or
 * unreadable file, an empty one, an unterminated reference) stops the program before main() with exit status 78,
 * so that tritonserver never runs with the reference itself as its key.
 *
 * glibc calls the constructors of the libraries it loads at start with (argc, argv, envp). Built by the role on
 * each host: cc -O2 -fPIC -shared -o tritonfleet-argv-secrets.so tritonfleet-argv-secrets.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRAM "tritonserver"
#define OPEN "${file:"
#define MAX_SECRET 4096
#define EXIT_CONFIG 78 /* EX_CONFIG */

static void die(const char *what, const char *path) {
    const char *reason = errno ? strerror(errno) : "empty";
    const char *parts[] = {"tritonfleet-argv-secrets: ", what, " ", path, ": ", reason, "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        ssize_t ignored = write(2, parts[i], strlen(parts[i]));
        (void)ignored;
    }
    _exit(EXIT_CONFIG);
}

/* The content of path, without trailing newlines: on the heap, or the program ends. */
static char *read_secret(const char *path) {
    char *secret = malloc(MAX_SECRET + 1);
    size_t used = 0;
    ssize_t got;
    int fd;
    errno = 0;
    if (secret == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        die("cannot open", path);
    while (used < MAX_SECRET && (got = read(fd, secret + used, MAX_SECRET - used)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die("cannot read", path);
        }
        used += (size_t)got;
    }
    close(fd);
    while (used > 0 && (secret[used - 1] == '\n' || secret[used - 1] == '\r'))
        used--;
    secret[used] = '\0';
    errno = 0;
    if (used == 0)
        die("no secret in", path);
    return secret;
}

/* arg with every ${file:PATH} replaced by PATH's content, or arg itself when it has none. */
static char *resolve(char *arg) {
    char *out = NULL, *rest = arg, *open_at;
    size_t length = 0;
    while ((open_at = strstr(rest, OPEN)) != NULL) {
        char *path = open_at + strlen(OPEN), *close_at = strchr(path, '}');
        errno = 0;
        if (close_at == NULL)
            die("unterminated reference in argument", open_at);
        char *file = strndup(path, (size_t)(close_at - path));
        if (file == NULL)
            die("out of memory for", path);
        char *secret = read_secret(file);
        free(file);
        size_t before = (size_t)(open_at - rest), size = strlen(secret);
        out = realloc(out, length + before + size + 1);
        if (out == NULL)
            die("out of memory for", path);
        memcpy(out + length, rest, before);
        memcpy(out + length + before, secret, size);
        length += before + size;
        explicit_bzero(secret, size);
        free(secret);
        rest = close_at + 1;
    }
    if (out == NULL)
        return arg;
    size_t tail = strlen(rest);
    out = realloc(out, length + tail + 1);
    if (out == NULL)
        die("out of memory for", arg);
    memcpy(out + length, rest, tail + 1);
    return out;
}

__attribute__((constructor)) static void tritonfleet_argv_secrets(int argc, char **argv, char **envp) {
    (void)envp;
    if (argc < 1 || argv == NULL || argv[0] == NULL)
        return;
    const char *name = strrchr(argv[0], '/');
    if (strcmp(name ? name + 1 : argv[0], PROGRAM) != 0)
        return;
    for (int i = 1; i < argc; i++)
        argv[i] = resolve(argv[i]);
}
