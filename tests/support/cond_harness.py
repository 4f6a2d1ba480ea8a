"""A C harness that runs a routed function F many times, from several threads, on the real CPU.

The code region (0x10000000, RWX) holds F at ENTRY and the cave at CAVE; the data region
(0x20000000, RW) holds the counters and any argument memory (strings, structs). Each thread
calls F `calls` times through an assembly trampoline that loads every general register and 32
stack words above the return address from an input set (call k uses set k % nsets), calls, and
compares what came back: every register but the result/scratch ones and every stack word but
the result slots must be unchanged (reported as a count of differences). Per call it records
the result register (RAX/EAX) and one stack slot.
"""
import subprocess
from pathlib import Path

CODE, DATA = 0x10000000, 0x20000000
ENTRY, CAVE = CODE, CODE + 0x800
NSTACK = 32

MAIN_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
typedef unsigned long long u64;
#ifdef __x86_64__
typedef u64 word; enum { NREG = 16 };
#else
typedef uint32_t word; enum { NREG = 8 };
#endif
extern void call_f(uintptr_t target, word *in_regs, word *in_stack, word *out_regs, word *out_stack);
static word sets_regs[64][NREG], sets_stack[64][32];
static int nsets, calls, slot, nthreads;
static u64 keep_regs, keep_stack; /* bit i set: register/stack word i must come back unchanged */
static word *out_rax, *out_slot;
static long clobbered[64];
static void region(uintptr_t at, size_t n, int prot) {
    void *p = mmap((void *)at, n, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != (void *)at) { perror("mmap"); exit(2); }
}
static pthread_barrier_t start;
static void *worker(void *arg) {
    long t = (long)arg;
    pthread_barrier_wait(&start); /* every thread calls F at the same time */
    word out_regs[NREG], out_stack[32];
    for (int k = 0; k < calls; k++) {
        int s = k % nsets;
        call_f(0x10000000, sets_regs[s], sets_stack[s], out_regs, out_stack);
        out_rax[t * calls + k] = out_regs[0];
        out_slot[t * calls + k] = out_stack[slot];
        for (int i = 0; i < NREG; i++)
            if ((keep_regs >> i & 1) && out_regs[i] != sets_regs[s][i]) clobbered[t]++;
        for (int i = 0; i < 32; i++)
            if ((keep_stack >> i & 1) && out_stack[i] != sets_stack[s][i]) clobbered[t]++;
    }
    return 0;
}
static char line[1 << 20];
int main(int argc, char **argv) {
    region(0x10000000, 0x10000, PROT_READ | PROT_WRITE | PROT_EXEC);
    region(0x20000000, 0x10000, PROT_READ | PROT_WRITE);
    memset((void *)0x10000000, 0xcc, 0x10000);
    FILE *f = fopen(argv[1], "r");
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        if (line[0] == 'r' || line[0] == 's') {
            word *dst = line[0] == 'r' ? sets_regs[nsets] : sets_stack[nsets];
            int n = line[0] == 'r' ? NREG : 32;
            p++;
            for (int i = 0; i < n; i++) dst[i] = (word)strtoull(p, &p, 16);
            if (line[0] == 's') nsets++;
            continue;
        }
        uintptr_t addr = (uintptr_t)strtoull(line, &p, 16);
        p++;
        for (size_t i = 0; p[2 * i] && p[2 * i] != '\n'; i++) {
            unsigned v; sscanf(p + 2 * i, "%2x", &v); ((unsigned char *)addr)[i] = v;
        }
    }
    nthreads = atoi(argv[2]); calls = atoi(argv[3]); slot = atoi(argv[4]);
    keep_regs = strtoull(argv[5], 0, 16); keep_stack = strtoull(argv[6], 0, 16);
    out_rax = calloc((size_t)nthreads * calls, sizeof(word));
    out_slot = calloc((size_t)nthreads * calls, sizeof(word));
    pthread_t th[64];
    pthread_barrier_init(&start, 0, nthreads);
    for (long t = 0; t < nthreads; t++) pthread_create(&th[t], 0, worker, (void *)t);
    for (long t = 0; t < nthreads; t++) pthread_join(th[t], 0);
    for (long t = 0; t < nthreads; t++) {
        printf("%ld", clobbered[t]);
        for (int k = 0; k < calls; k++)
            printf(" %llx/%llx", (u64)out_rax[t * calls + k], (u64)out_slot[t * calls + k]);
        printf("\n");
    }
    for (int i = 0; i < 1024; i++) printf("%02x", ((unsigned char *)0x20000000)[i]);
    printf("\n");
    return 0;
}
"""

GPR64 = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


def tramp_amd64() -> str:
    loads = [f"mov {GPR64[n]}, [r12+{8 * n}]" for n in range(16) if n not in (4, 5, 12)]
    stores = [f"mov [rax+{8 * n}], {GPR64[n]}" for n in range(1, 16) if n not in (4, 5)]
    s = [".intel_syntax noprefix", ".text", ".globl call_f", "call_f:",
         "push rbp", "mov rbp, rsp", "push rbx", "push r12", "push r13", "push r14", "push r15",
         "push rcx", "push r8", "push rdi", "push 0", "sub rsp, 256",
         "mov r12, rsi", "mov rsi, rdx", "mov rdi, rsp", "mov rcx, 32", "rep movsq",
         *loads, "mov r12, [r12+96]", "call QWORD PTR [rbp-64]",
         "mov [rbp-72], rax", "mov rax, [rbp-48]", *stores,
         "mov rcx, [rbp-72]", "mov [rax], rcx",
         "mov rsi, rsp", "mov rdi, [rbp-56]", "mov rcx, 32", "rep movsq",
         "lea rsp, [rbp-40]", "pop r15", "pop r14", "pop r13", "pop r12", "pop rbx", "pop rbp",
         "ret", ".section .note.GNU-stack,\"\",@progbits"]
    return "\n".join(s) + "\n"


def tramp_386() -> str:
    s = [".intel_syntax noprefix", ".text", ".globl call_f", "call_f:",
         "push ebp", "mov ebp, esp", "push ebx", "push esi", "push edi", "push 0", "sub esp, 128",
         "mov esi, [ebp+16]", "mov edi, esp", "mov ecx, 32", "rep movsd",
         "mov eax, [ebp+12]", "mov ecx, [eax+4]", "mov edx, [eax+8]", "mov ebx, [eax+12]",
         "mov esi, [eax+24]", "mov edi, [eax+28]", "mov eax, [eax]",
         "call DWORD PTR [ebp+8]",
         "mov [ebp-16], eax", "mov eax, [ebp+20]", "mov [eax+4], ecx", "mov [eax+8], edx",
         "mov [eax+12], ebx", "mov [eax+24], esi", "mov [eax+28], edi",
         "mov ecx, [ebp-16]", "mov [eax], ecx",
         "mov esi, esp", "mov edi, [ebp+24]", "mov ecx, 32", "rep movsd",
         "lea esp, [ebp-12]", "pop edi", "pop esi", "pop ebx", "pop ebp", "ret",
         ".section .note.GNU-stack,\"\",@progbits"]
    return "\n".join(s) + "\n"


def build(tmp: Path, arch: str):
    """The harness executable, or (None, why) when gcc cannot build it."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "main.c").write_text(MAIN_C)
    asm = tramp_amd64() if arch == "amd64" else tramp_386()
    (tmp / "tramp.s").write_text(asm)
    exe = tmp / f"harness_{arch}"
    flags = ["-m64"] if arch == "amd64" else ["-m32"]
    r = subprocess.run(["gcc", *flags, "-O1", "-no-pie", "-pthread", "-o", str(exe),
                        str(tmp / "main.c"), str(tmp / "tramp.s")], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr
    return exe, ""


class Run:
    def __init__(self, clobbered, rax, slot, counters):
        self.clobbered, self.rax, self.slot, self.counters = clobbered, rax, slot, counters

    def all(self, what="rax"):
        return [v for t in getattr(self, what) for v in t]


def run(exe: Path, patches, sets, threads=1, calls=1, slot=0, keep_regs=(), keep_stack=(),
        memory=(), ptrsize=8, timeout=120) -> Run:
    """patches: Patch objects; sets: [(regs dict name->value, stack list of words)];
    memory: [(addr, bytes)] written into the data region before the calls."""
    names = GPR64 if ptrsize == 8 else GPR32
    lines = [f"{p.addr:x} {p.replacement.hex()}" for p in patches]
    lines += [f"{a:x} {b.hex()}" for a, b in memory]
    for regs, stack in sets:
        lines.append("r " + " ".join(f"{regs.get(n, 0x5E5E0000 + 0x11 * k):x}"
                                     for k, n in enumerate(names)))
        words = list(stack) + [0xABAB0000 + k for k in range(len(stack), NSTACK)]
        lines.append("s " + " ".join(f"{w & ((1 << (8 * ptrsize)) - 1):x}" for w in words))
    inp = exe.parent / f"input_{id(lines)}.txt"
    inp.write_text("\n".join(lines) + "\n")
    kr = sum(1 << names.index(n) for n in keep_regs)
    ks = sum(1 << k for k in keep_stack)
    out = subprocess.run([str(exe), str(inp), str(threads), str(calls), str(slot), f"{kr:x}",
                          f"{ks:x}"], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    rows = out.stdout.split("\n")
    clob, rax, sl = [], [], []
    for row in rows[:threads]:
        parts = row.split()
        clob.append(int(parts[0]))
        pairs = [p.split("/") for p in parts[1:]]
        rax.append([int(a, 16) for a, _ in pairs])
        sl.append([int(b, 16) for _, b in pairs])
    return Run(clob, rax, sl, bytes.fromhex(rows[threads]))
