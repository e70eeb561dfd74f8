//! A TCP proxy on loopback that a test starts in front of a real database
//! and can pause (traffic held, connections open: a database that hangs) or
//! cut (connections closed, new ones dropped: a database that is gone), then
//! give back. The shared servers are never touched.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Passes it both ways.
    Forward,
    /// Holds it: bytes wait, connections stay open.
    Paused,
    /// Closes every connection and drops new ones.
    Cut,
}

pub struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (mode, watching) = watch::channel(Mode::Forward);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                let watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pipe(client_read, server_write, watching.clone()));
                    let down = tokio::spawn(pipe(server_read, client_write, watching));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Proxy {
            address,
            mode,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Cut);
        self.accept.abort();
    }
}

/// Waits until traffic may flow; `false` when the connection is to close.
async fn may_flow(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Forward => return true,
            Mode::Cut => return false,
            Mode::Paused => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies one direction, holding bytes while paused, until either side
/// closes or the proxy cuts.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !may_flow(&mut mode).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // A change of mode: look again (a cut closes at once).
            _ = mode.changed() => continue,
        };
        let Ok(read @ 1..) = read else {
            return;
        };
        if !may_flow(&mut mode).await || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
