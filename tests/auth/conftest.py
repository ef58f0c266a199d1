"""Key fixtures (generated once per module, kept in memory only) and the JWK Set mock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hooks.auth import (
    TrustedClient,
)
from tests.auth.tokens import ISS, jwk_set, public_jwk


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_other() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec384_other() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture()
def rsa_client(rsa_key: rsa.RSAPrivateKey) -> TrustedClient:
    return TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(rsa_key)))


@pytest.fixture()
def ec_client(ec384: ec.EllipticCurvePrivateKey) -> TrustedClient:
    return TrustedClient(issuer=ISS, jwks=jwk_set(public_jwk(ec384)))


@pytest.fixture()
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router
