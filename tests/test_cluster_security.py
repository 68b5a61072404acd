"""Other users of the machine cannot use aigi's Dask cluster: the embedded one speaks TLS with
credentials made for the run, so a client without them (or with its own) is refused; a dashboard
off loopback needs `dashboard_public = true`; an external TLS cluster is reached with the
credentials of Dask's own config."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from aigi.core.configtools import ConfigError
from aigi.pipeline.config import DaskSection, load_config


def forty_two() -> int:
    return 42


def write(tmp_path: Path, dask_table: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(f'[run]\nout = "runs/x"\n\n[dask]\n{dask_table}\n', encoding="utf-8")
    return p


@pytest.mark.parametrize("address", ["0.0.0.0:8787", ":8787", "192.0.2.7:8787"])
def test_a_dashboard_off_loopback_is_refused_unless_public(tmp_path: Path, address: str) -> None:
    cfg = write(tmp_path, f'dashboard_address = "{address}"')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert str(cfg) in msg and "dask.dashboard_address" in msg and "dashboard_public" in msg
    assert "\n" not in msg

    public = load_config(write(tmp_path, f'dashboard_address = "{address}"\ndashboard_public = true'))
    assert public.dask.dashboard_address == address


@pytest.mark.parametrize("address", ["127.0.0.1:8787", "localhost:0", "[::1]:8787", ""])
def test_a_dashboard_on_loopback_or_off_is_accepted(tmp_path: Path, address: str) -> None:
    assert load_config(write(tmp_path, f'dashboard_address = "{address}"')).dask.dashboard_address == address


def refused(address: str, **kwargs) -> bool:
    """Whether a client connecting to `address` (with `kwargs`) fails within a few seconds."""
    from distributed import Client

    try:
        client = Client(address, timeout=3, **kwargs)
    except (OSError, TypeError, ValueError):  # no TLS context, handshake refused, connection reset, timeout
        # The half-built client is finalised now: finalised later, inside the next Client's start,
        # it deadlocks on the shared event-loop lock.
        gc.collect()
        return True
    client.close()
    return False


def test_the_embedded_cluster_refuses_clients_without_its_credentials() -> None:
    from distributed.security import Security

    from aigi.pipeline.cluster import open_client

    with open_client(DaskSection(n_workers=1, threads_per_worker=1)) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:"), address
        assert client.submit(forty_two, pure=False).result() == 42
        assert refused(address)  # plain client: no credentials
        assert refused(address.replace("tls://", "tcp://", 1))  # plain TCP to the TLS port
        stranger = Security.temporary()
        assert refused(address, security=stranger)  # its own certificate: not the run's
        # Even trusting the run's certificate, the scheduler checks the client's: a stranger that
        # learnt the (public) certificate still has no key signed by it.
        trusting = Security(tls_ca_file=client.security.tls_ca_file, tls_client_cert=stranger.tls_client_cert,
                            tls_client_key=stranger.tls_client_key, require_encryption=True)
        assert refused(address, security=trusting)
        assert client.submit(forty_two, pure=False).result() == 42  # the run's client still works


def test_without_tls_the_embedded_cluster_is_plain_tcp() -> None:
    from aigi.pipeline.cluster import open_client

    with open_client(DaskSection(n_workers=1, threads_per_worker=1, tls=False)) as client:
        address = client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:"), address
        assert client.submit(forty_two, pure=False).result() == 42
        assert not refused(address)


def test_an_external_tls_cluster_is_reached_with_the_credentials_of_dask_config(tmp_path: Path) -> None:
    """What docs/scaling.md says: `dask scheduler/worker --tls-*` on the cluster, and
    `distributed.comm.tls.*` in Dask's config on the machine that runs `aigi run`."""
    import dask
    from distributed import LocalCluster
    from distributed.security import Security

    from aigi.pipeline.cluster import open_client

    made = Security.temporary()  # a self-signed certificate: it is its own CA
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.write_text(made.tls_ca_file)
    cert.write_text(made.tls_client_cert)
    key.write_text(made.tls_client_key)
    files = {f"tls_{role}_{part}": str(p) for role in ("scheduler", "worker", "client")
             for part, p in (("cert", cert), ("key", key))}
    security = Security(tls_ca_file=str(ca), require_encryption=True, **files)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      dashboard_address=None, security=security) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://") and refused(address)
        with pytest.raises(ConfigError, match="distributed.comm.tls.ca-file") as err:
            with open_client(DaskSection(), address=address):
                pass
        assert address in str(err.value) and "\n" not in str(err.value)
        with dask.config.set({"distributed.comm.tls.ca-file": str(ca), "distributed.comm.tls.client.cert": str(cert),
                              "distributed.comm.tls.client.key": str(key)}):
            with open_client(DaskSection(), address=address) as client:
                assert client.submit(forty_two, pure=False).result() == 42
