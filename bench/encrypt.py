#!/usr/bin/env python3
"""Crypt4GH throughput against the references, measured in one run (issue 7).

    bench/encrypt.py [--bytes N] [--repeat R]

* ours (seqlife.encrypt.c4gh) encrypting and decrypting an N-byte random file (default 1 GiB),
  each in a fresh interpreter, output to /dev/null, best of R;
* `openssl speed -evp chacha20-poly1305 -bytes 16384` in the same run (target ours >= 0.5x);
* the reference `crypt4gh` command-line tool on the same file (target ours >= 1.2x);
* re-encrypting the header of the encrypted 1 GiB file for a new recipient (target < 50 ms);
* peak RSS of ours (target < 200 MB).
Results go to stdout and bench/results/encrypt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

OURS = """
import io, resource, sys, time
from seqlife.encrypt import c4gh
mode, src, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
with open(src, "rb", buffering=0) as s, open("/dev/null", "wb") as d:
    t = time.perf_counter()
    if mode == "encrypt":
        c4gh.encrypt_stream(s, d, [key], digest=False)
    else:
        c4gh.decrypt_stream(s, d, key, digest=False)
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def ours(mode: str, path: Path, key: bytes, repeat: int) -> tuple[float, int]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", OURS, mode, str(path), key.hex()],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
        runs.append((float(out[0]), int(out[1])))
    return min(r[0] for r in runs), max(r[1] for r in runs)


def best_wall(command: str, repeat: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, shell=True, check=True, env=env, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def openssl_chacha_MBps() -> float:
    out = subprocess.run(["openssl", "speed", "-evp", "chacha20-poly1305", "-bytes", "16384",
                          "-seconds", "2"], check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.lower().startswith("chacha20-poly1305"))
    return float(re.findall(r"([\d.]+)k", line)[-1]) * 1000 / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=int, default=1 << 30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from crypt4gh.keys import c4gh as c4gh_keys
    from crypt4gh.keys import get_private_key, get_public_key

    from seqlife.encrypt import c4gh

    DATA.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plain = DATA / f"random-{args.bytes}.bin"
    if not plain.exists() or plain.stat().st_size != args.bytes:
        with open(plain, "wb") as out:
            left = args.bytes
            while left:
                out.write(os.urandom(min(left, 1 << 24)))
                left -= min(left, 1 << 24)
    keydir = DATA / "c4gh-keys"
    keydir.mkdir(exist_ok=True)
    if not (keydir / "r.sec").exists():
        c4gh_keys.generate(str(keydir / "r.sec"), str(keydir / "r.pub"), passphrase=None,
                           comment=b"bench")
    secret = get_private_key(str(keydir / "r.sec"), lambda: "")
    public = get_public_key(str(keydir / "r.pub"))
    encrypted = DATA / f"random-{args.bytes}.c4gh"
    with open(plain, "rb") as src, open(encrypted, "wb") as dst:
        c4gh.encrypt_stream(src, dst, [public])
    subprocess.run(["cat", str(plain), str(encrypted)], stdout=subprocess.DEVNULL, check=True)

    env = {**os.environ, "C4GH_PASSPHRASE": ""}
    ref_enc = best_wall(f"'{BIN / 'crypt4gh'}' encrypt --recipient_pk '{keydir / 'r.pub'}' "
                        f"< '{plain}' > /dev/null", args.repeat, env)
    ref_dec = best_wall(f"'{BIN / 'crypt4gh'}' decrypt --sk '{keydir / 'r.sec'}' "
                        f"< '{encrypted}' > /dev/null", args.repeat, env)
    enc, enc_rss = ours("encrypt", plain, public, args.repeat)
    dec, dec_rss = ours("decrypt", encrypted, secret, args.repeat)
    openssl = openssl_chacha_MBps()
    recipient = c4gh.public_key_of(c4gh.new_secret_key())
    header_ms = []
    for _ in range(max(args.repeat, 5)):
        start = time.perf_counter()
        with open(encrypted, "rb") as src:
            c4gh.reencrypt_header(src, secret, [recipient])
        header_ms.append((time.perf_counter() - start) * 1000)
    size = args.bytes
    results = {
        "bytes": size,
        "encrypt_MBps": size / enc / 1e6, "decrypt_MBps": size / dec / 1e6,
        "openssl_chacha20_poly1305_MBps": openssl,
        "crypt4gh_cli_encrypt_MBps": size / ref_enc / 1e6,
        "crypt4gh_cli_decrypt_MBps": size / ref_dec / 1e6,
        "ratio_encrypt_vs_openssl": size / enc / 1e6 / openssl,
        "ratio_decrypt_vs_openssl": size / dec / 1e6 / openssl,
        "ratio_encrypt_vs_crypt4gh_cli": ref_enc / enc,
        "ratio_decrypt_vs_crypt4gh_cli": ref_dec / dec,
        "header_reencrypt_ms": min(header_ms),
        "peak_rss_MB": max(enc_rss, dec_rss) / 1e6,
        "targets": {"ratio_vs_openssl": ">= 0.5", "ratio_vs_crypt4gh_cli": ">= 1.2",
                    "header_reencrypt_ms": "< 50", "peak_rss_MB": "< 200"},
    }
    (RESULTS / "encrypt.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"Crypt4GH on {size / 2**30:.2f} GiB (best of {args.repeat}):")
    print(f"  encrypt {results['encrypt_MBps']:7.0f} MB/s  vs openssl chacha20-poly1305 "
          f"{openssl:7.0f} MB/s -> {results['ratio_encrypt_vs_openssl']:.2f} (>= 0.5); vs crypt4gh "
          f"CLI {results['crypt4gh_cli_encrypt_MBps']:.0f} MB/s -> "
          f"{results['ratio_encrypt_vs_crypt4gh_cli']:.2f} (>= 1.2)")
    print(f"  decrypt {results['decrypt_MBps']:7.0f} MB/s  -> "
          f"{results['ratio_decrypt_vs_openssl']:.2f} of openssl; vs crypt4gh CLI "
          f"{results['crypt4gh_cli_decrypt_MBps']:.0f} MB/s -> "
          f"{results['ratio_decrypt_vs_crypt4gh_cli']:.2f} (>= 1.2)")
    print(f"  header re-encryption for a new recipient: {results['header_reencrypt_ms']:.2f} ms "
          f"(< 50); peak RSS {results['peak_rss_MB']:.0f} MB (< 200)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
