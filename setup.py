"""The one C extension, attestation._ed25519 (the audit's fast signature checks). It is
optional: without a C compiler, or on a target it does not support, the build skips it
and every signature is checked by OpenSSL, as attestation.keys says."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "attestation._ed25519",
            ["attestation/_ed25519.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
