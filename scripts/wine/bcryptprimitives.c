/* Test-harness shim for wine 8, never shipped: Rust's std imports
 * ProcessPrng from bcryptprimitives.dll, which wine 8 lacks, so every Rust
 * binary fails to load (c0000135). This DLL provides it on top of
 * RtlGenRandom (SystemFunction036 in advapi32), which wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
