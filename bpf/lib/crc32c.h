// crc32c.h - keep an SCTP packet's CRC32c right after a rewrite, without reading the
// packet again.
//
// The CRC32c (reflected, polynomial 0x82F63B78) is linear: for two packets of the same
// length, crc(A) ^ crc(B) is the CRC, from a zero register and without the final xor, of
// A ^ B. A rewrite of the 4 bytes at `off` therefore changes the checksum by the raw CRC
// of those 4 bytes' xor, carried through the (len - off - 4) bytes that follow it (zeros
// in A ^ B). Carrying a register through m zero bytes is multiplication by x^(8m) modulo
// the polynomial: crc_shift[m] holds x^(8m) (filled once by the control plane,
// appliance/datapath/crc32c.py). Cost: two 32-step loops per rewritten word, whatever the
// packet's length; a packet longer than SCTP_CRC_MAX_LEN cannot be fixed and is dropped
// (the datapath's MTU is far below it).
#pragma once

#define CRC32C_POLY      0x82F63B78u
#define SCTP_CRC_MAX_LEN 16384       // crc_shift entries; mirrored in layout.py

BPF_TABLE_PINNED("array", __u32, __u32, crc_shift, SCTP_CRC_MAX_LEN, PIN("crcsh"));

// The raw register after 4 bytes (first byte in the low bits) from a zero register.
static __always_inline __u32 crc32c_word0(__u32 v)
{
#pragma unroll
    for (int i = 0; i < 32; i++)
        v = (v >> 1) ^ ((v & 1) * CRC32C_POLY);
    return v;
}

// a * b modulo the polynomial (bit 31 is x^0). Branch-free, like crc32c_word0: a branch
// on packet data would double the verifier's states at every step.
static __always_inline __u32 crc32c_mul(__u32 a, __u32 b)
{
    __u32 p = 0;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        p ^= b * ((a >> (31 - i)) & 1);
        b = (b >> 1) ^ ((b & 1) * CRC32C_POLY);
    }
    return p;
}

// What the checksum changes by when the 4 bytes at `off` of an SCTP packet of `len`
// bytes change by `x` (old ^ new, as loaded from memory). 0 with *ok = 0: cannot tell.
static __always_inline __u32 crc32c_delta(__u32 x, __u32 off, __u32 len, int *ok)
{
    __u32 m = len - off - 4;
    *ok = 0;
    if (off + 4 > len || m >= SCTP_CRC_MAX_LEN)
        return 0;
    __u32 *sh = crc_shift.lookup(&m);
    if (!sh || !*sh)
        return 0;                              // table not filled: refuse, never corrupt
    *ok = 1;
    return crc32c_mul(*sh, crc32c_word0(x));
}
