"""`pbx.tls`, `pbx.media_encryption` and `trunks[].transport` (issue 21):
what the YAML accepts, the clear errors for what it refuses, and what it
makes of Kamailio's config (checked by `kamailio -c`) and of trunk URIs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pbx.kamailio import Kamailio, render_config, render_tls_config
from provisioning.loader import ConfigError, load_config
from provisioning.schema import Config
from tests.test_edge_tls_calls import make_pair

TRUNK = {
    "name": "prov",
    "registrar": "sip:sip.provider.test",
    "username": "u",
    "password": "p-secret",
    "outbound_prefixes": ["0"],
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_pair(tmp_path_factory.mktemp("pair"))


def write(tmp_path: Path, pbx: dict[str, Any], **extra: Any) -> Path:
    """A YAML with an edge on 192.0.2.10 and this `pbx:` (plus `extra`)."""
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "database": str(tmp_path / "ponte.db"),
        "pbx": {"listen": "192.0.2.10:5060", **pbx},
        "extensions": [{"number": "1001", "name": "A", "password": "a-Secret-x9q"}],
        **extra,
    }
    path = tmp_path / "ponte.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tls(pair: tuple[Path, Path], **extra: Any) -> dict[str, Any]:
    cert, key = pair
    return {"tls": {"certificate": str(cert), "key": str(key), **extra}}


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


def test_defaults_and_the_tls_port(tmp_path, pair):
    cfg = load_config(write(tmp_path, tls(pair)))
    assert cfg.pbx.tls is not None and cfg.pbx.tls_listen == "192.0.2.10:5061"
    assert cfg.pbx.media_encryption == "optional"
    assert Config().pbx.tls is None and Config().pbx.media_encryption == "optional"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"certificate": "/nonexistent/cert.pem"}, "pbx.tls.certificate /nonexistent/cert.pem"),
        ({"certificate": "cert.pem"}, "must be an absolute path"),
        ({"swap": True}, "key.pem holds no certificate (a PEM '-----BEGIN CERTIFICATE-----'"),
        ({"listen": "192.0.2.10:5060"}, "pbx.tls.listen 192.0.2.10:5060 is pbx.listen's"),
        ({"listen": "192.0.2.11:5060"}, "pbx.tls.listen's port 5060 is pbx.listen's"),
        ({"listen": "0.0.0.0:5061"}, "pbx.tls.listen must be one address"),
        ({"listen": "192.0.2.10"}, "pbx.tls.listen must be HOST:PORT"),
    ],
)
def test_bad_tls_settings_are_refused_clearly(tmp_path, pair, change, message):
    settings = tls(pair)
    if change.pop("swap", False):
        settings["tls"]["certificate"] = settings["tls"]["key"]
    settings["tls"].update(change)
    assert message in refused(write(tmp_path, settings))


def test_required_needs_tls_and_a_tls_trunk_too(tmp_path, pair):
    assert "required needs pbx.tls" in refused(write(tmp_path, {"media_encryption": "required"}))
    assert "media_encryption" in refused(write(tmp_path, {"media_encryption": "always"}))
    trunk = {**TRUNK, "transport": "tls"}
    assert "trunk prov: transport tls needs pbx.tls" in refused(write(tmp_path, {}, trunks=[trunk]))
    assert "transport" in refused(
        write(tmp_path, tls(pair), trunks=[{**TRUNK, "transport": "tcp"}])
    )


def test_tls_trunk_uris_name_the_port_and_transport(tmp_path, pair):
    cfg = load_config(write(tmp_path, tls(pair), trunks=[{**TRUNK, "transport": "tls"}]))
    (trunk,) = cfg.trunks
    assert trunk.uri("5511") == "sip:5511@sip.provider.test:5061;transport=tls"
    assert trunk.registrar_uri == "sip:sip.provider.test;transport=tls"
    plain = load_config(write(tmp_path, {}, trunks=[TRUNK])).trunks[0]
    assert plain.uri("5511") == "sip:5511@sip.provider.test"
    assert plain.registrar_uri == "sip:sip.provider.test"


def test_without_tls_the_config_is_udp_only(tmp_path):
    cfg = load_config(write(tmp_path, {}))
    text = render_config(cfg, tmp_path)
    assert "\ndisable_tcp=yes\n" in text
    assert "#!define WITH_TLS" not in text and "#!define MEDIA_REQUIRED" not in text


def test_kamailio_takes_the_tls_config(tmp_path, pair):
    """The rendered kamailio.cfg and tls.cfg pass `kamailio -c` (prepare)
    for `required`, and say what the YAML asked."""
    cfg = load_config(
        write(
            tmp_path,
            {**tls(pair, listen="192.0.2.10:5062"), "media_encryption": "required"},
            trunks=[{**TRUNK, "transport": "tls"}],
        )
    )
    runtime = tmp_path / "kam"
    Kamailio(cfg, runtime).prepare()  # raises KamailioError if kamailio -c refuses it
    text = (runtime / "kamailio.cfg").read_text()
    for line in (
        "#!define WITH_TLS",
        "#!define TLS_SOCK tls:192.0.2.10:5062",
        "#!define MEDIA_REQUIRED",
        "listen=tls:192.0.2.10:5062",
        f'modparam("tls", "config", "{runtime / "tls.cfg"}")',
    ):
        assert f"\n{line}\n" in text, line
    tls_cfg = (runtime / "tls.cfg").read_text()
    assert tls_cfg == render_tls_config(cfg)
    cert, key = pair
    assert f"certificate = {cert}\n" in tls_cfg and f"private_key = {key}\n" in tls_cfg
    # Providers are checked against the CA list; phones are not asked for a certificate.
    client = tls_cfg.split("[client:default]")[1]
    assert "verify_certificate = yes" in client and "ca_list = /etc/ssl/certs" in client
    assert (runtime / "tls.cfg").stat().st_mode & 0o077 == 0
    check = subprocess.run(
        ["kamailio", "-c", "-f", str(runtime / "kamailio.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr[-2000:]


def test_ponte_check_says_to_open_the_tls_port(tmp_path, pair):
    from provisioning.advice import network_notes

    cfg = load_config(write(tmp_path, {**tls(pair), "media_encryption": "required"}))
    notes = [note for _, note in network_notes(cfg)]
    assert any("open TCP 5061" in n and "required" in n for n in notes), notes


def test_behind_a_1_to_1_nat_tls_is_advertised_on_the_public_address(tmp_path, pair):
    cfg = load_config(write(tmp_path, {**tls(pair), "public_address": "203.0.113.7"}))
    text = render_config(cfg, tmp_path)
    assert "\nlisten=tls:192.0.2.10:5061 advertise 203.0.113.7:5061\n" in text
    assert "\nalias=203.0.113.7:5061\n" in text


def test_tls_phones_and_websocket_browsers_share_kamailio_tcp(tmp_path, pair):
    """TLS for phones and the browsers' WebSocket together: one config that
    `kamailio -c` takes, each on its own TCP socket, TCP not disabled; and the
    two on one port are refused clearly."""
    ws = {"websocket": {"listen": "192.0.2.10:8089", "tls_listen": "192.0.2.10:8443"}}
    web = {"web": {"listen": "192.0.2.10:8088"}}
    cfg = load_config(write(tmp_path, {**tls(pair), **ws}, **web))
    assert cfg.pbx.websocket.tls_url == "wss://192.0.2.10:8443"
    runtime = tmp_path / "kam"
    Kamailio(cfg, runtime).prepare()  # raises KamailioError if kamailio -c refuses it
    text = (runtime / "kamailio.cfg").read_text()
    for line in (
        "listen=tls:192.0.2.10:5061",
        "listen=tcp:192.0.2.10:8089",
        "listen=tls:192.0.2.10:8443",
        "#!define WITH_WSS",
    ):
        assert f"\n{line}\n" in text, line
    assert "\ndisable_tcp=yes\n" in text  # only in the branch neither define takes
    check = subprocess.run(
        ["kamailio", "-c", "-f", str(runtime / "kamailio.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr[-2000:]
    clash = {**tls(pair), "websocket": {"listen": "192.0.2.10:5061"}}
    assert "pbx.tls.listen's" in refused(write(tmp_path, clash, **web))
    wss_only = {"websocket": {"listen": "192.0.2.10:8089", "tls_listen": "192.0.2.10:8443"}}
    assert "tls_listen needs pbx.tls" in refused(write(tmp_path, wss_only, **web))
    no_ws = {**tls(pair), "websocket": {"tls_listen": "192.0.2.10:8443"}}
    assert "needs pbx.websocket.listen too" in refused(write(tmp_path, no_ws, **web))
    on_sip_tls = {
        **tls(pair),
        "websocket": {"listen": "192.0.2.10:8089", "tls_listen": "192.0.2.10:5061"},
    }
    assert "pick another port for wss://" in refused(write(tmp_path, on_sip_tls, **web))
