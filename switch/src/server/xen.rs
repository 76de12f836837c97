//! The server's xenstore transport: app domains in Xen guests attach through the handshake
//! of [`crate::xen_ctl`] instead of the control socket, and their ports join the switch
//! through the same [`Control::add_app`] as the socket's apps.
//!
//! The control thread polls [`Xenstore::event_fd`] beside its other descriptors. Watch
//! events are coalesced per domain; every domain is rescanned once a second, so an event
//! lost to a flooding domain only delays another's handshake. Nothing a domain writes is
//! trusted: [`crate::xen_ctl`] parses every field, the hypervisor refuses references that
//! are not grants to this domain, and the port header is validated against the limits and
//! the mapping's size. A refusal touches only that domain's backend directory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grant_pool::{Access, DomId, GrantBackend, GrantRef, Memory, Notifier, PoolId, PortAnswer};
use pmd::Mac;

use super::config::XenAdmission;
use super::{AppEntry, Control, check_free};
use crate::app_port::AppCounters;
use crate::forward::PortId;
use crate::xen_ctl::{
    Answer, AttachRequest, Backend, FrontendView, MAX_APPS_PER_DOMAIN, RefList, XbState,
    XenCtlError, fmt_mac, frontend_names,
};
use crate::xenstore::Xenstore;

/// How often every domain is rescanned without an event.
const RESCAN: Duration = Duration::from_secs(1);

/// Domains handled per round (each costs a few xenstore round trips).
const PER_ROUND: usize = 64;

/// What the rest of the control thread needs to know of the Xen apps.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Names and MACs of attached and handshaking Xen apps.
    pub taken: Vec<(String, Mac)>,
    /// Counters of attached Xen apps.
    pub counters: Vec<(PortId, Arc<AppCounters>)>,
}

/// An attached Xen app and the request it attached with.
struct Attached<N> {
    entry: AppEntry<N>,
    nonce: u64,
}

/// The xenstore side of the control thread.
pub(super) struct XenSide<N> {
    xs: Xenstore,
    me: u16,
    max_refs: usize,
    allowed: Vec<XenAdmission>,
    /// Keyed by (domain, app name).
    apps: BTreeMap<(u16, String), Attached<N>>,
    /// Backend directories this instance created (and gave the app read access to).
    opened: BTreeSet<(u16, String)>,
    watched: BTreeSet<u16>,
    last_scan: Option<Instant>,
}

impl<N> XenSide<N> {
    /// Connects to xenstore and watches domains come and go.
    pub fn open(me: u16, max_refs: usize, allowed: Vec<XenAdmission>) -> Result<Self, XenCtlError> {
        let xs = Xenstore::open()?;
        let s = Self {
            xs,
            me,
            max_refs,
            allowed,
            apps: BTreeMap::new(),
            opened: BTreeSet::new(),
            watched: BTreeSet::new(),
            last_scan: None,
        };
        s.backend(0).watch_domains()?;
        Ok(s)
    }

    fn backend(&self, instance: u64) -> Backend<'_> {
        Backend::new(&self.xs, self.me, instance, self.max_refs)
    }

    /// The descriptor to poll for watch events.
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.xs.event_fd()
    }

    /// Names, MACs and counters of the Xen apps.
    pub fn view(&self) -> View {
        let mut v = View::default();
        for a in self.apps.values() {
            v.taken.push((a.entry.name.clone(), a.entry.mac));
            v.counters.push((a.entry.id, a.entry.counters.clone()));
        }
        v
    }

    /// Whether the periodic rescan is due.
    pub fn rescan_due(&self) -> bool {
        self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN)
    }
}

impl<N: grant_pool::Notifier + 'static> XenSide<N> {
    /// Handles what changed in xenstore: watch events (coalesced per app) and, once a
    /// second, every domain.
    pub fn service<B>(&mut self, ctl: &mut Control<B>, socket_taken: &[(String, Mac)])
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        self.xs.clear_event_signal();
        let instance = ctl.instance;
        let evs = match self.backend(instance).poll(Duration::ZERO) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("xenstore: {e}");
                return;
            }
        };
        let (mut apps, mut list) = (evs.apps, evs.list);
        if evs.domains || self.rescan_due() {
            self.last_scan = Some(Instant::now());
            match self.backend(instance).domains() {
                Ok(doms) => {
                    for &d in &doms {
                        if self.watched.insert(d) {
                            let _ = self.backend(instance).watch_app(d);
                        }
                        list.insert(d);
                    }
                    let gone: Vec<(u16, String)> = self
                        .apps
                        .keys()
                        .filter(|(d, _)| !doms.contains(d))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.drop_app(ctl, &k, "its domain is gone");
                    }
                    self.opened.retain(|(d, _)| doms.contains(d));
                    let gone: Vec<u16> = self
                        .watched
                        .iter()
                        .filter(|d| !doms.contains(d))
                        .copied()
                        .collect();
                    for d in gone {
                        self.watched.remove(&d);
                        let _ = self.backend(instance).unwatch_app(d);
                        let _ = self.backend(instance).forget_domain(d);
                    }
                }
                Err(e) => tracing::warn!("xenstore: listing domains: {e}"),
            }
        }
        for d in list.into_iter().take(PER_ROUND) {
            let names = match frontend_names(&self.xs, d) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(domain = d, "xenstore: {e}");
                    continue;
                }
            };
            // Apps whose directory went away left.
            let left: Vec<(u16, String)> = self
                .apps
                .keys()
                .filter(|(a, n)| *a == d && !names.contains(n))
                .cloned()
                .collect();
            for k in left {
                self.drop_app(ctl, &k, "its frontend directory is gone");
            }
            apps.extend(names.into_iter().map(|n| (d, n)));
        }
        // Bounded per domain: a domain naming many apps delays only itself.
        let mut per_domain: BTreeMap<u16, usize> = BTreeMap::new();
        let apps: Vec<(u16, String)> = apps
            .into_iter()
            .filter(|k| {
                let n = per_domain.entry(k.0).or_default();
                *n += 1;
                *n <= MAX_APPS_PER_DOMAIN
            })
            .collect();
        // Every app's state, request and answer in one round trip; then each in turn.
        let t0 = Instant::now();
        let views = match self.backend(instance).views(&apps) {
            Ok(v) => v,
            Err(e) => return tracing::warn!("xenstore: {e}"),
        };
        let read = t0.elapsed();
        for (k, v) in apps.into_iter().zip(views) {
            match v {
                Ok(v) => self.handle(ctl, k, v, read, socket_taken),
                Err(XenCtlError::Xs(e)) => {
                    tracing::warn!(domain = k.0, app = %k.1, "xenstore: {e}");
                }
                Err(e) => self.refuse(ctl, &k, 0, &e.to_string()),
            }
        }
    }

    /// Detaches attached apps whose process died in a domain that lives on: the kernel of
    /// the app's domain cleared the granter-alive byte of its grant (gntalloc unmap-notify)
    /// and rang its event channel; the switch thread saw it and flagged the port's
    /// counters. Cheap (one flag per app); the control thread calls it every round.
    pub fn reap<B>(&mut self, ctl: &mut Control<B>)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let dead: Vec<(u16, String)> = self
            .apps
            .iter()
            .filter(|(_, a)| a.entry.counters.granter_gone())
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.drop_app(
                ctl,
                &k,
                "its process is gone (its grant's unmap-notify fired)",
            );
        }
    }

    fn drop_app<B>(&mut self, ctl: &mut Control<B>, k: &(u16, String), why: &str)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        if let Some(a) = self.apps.remove(k) {
            ctl.detach(a.entry, why);
        }
    }

    /// Answers `k` with `a`, creating its backend directory the first time.
    fn answer<B>(&mut self, ctl: &Control<B>, k: &(u16, String), a: &Answer)
    where
        B: GrantBackend<Notifier = N>,
    {
        let open = !self.opened.contains(k);
        match self.backend(ctl.instance).post_answer(k.0, &k.1, a, open) {
            Ok(()) => {
                self.opened.insert(k.clone());
            }
            Err(e) => tracing::warn!(domain = k.0, app = %k.1, "xenstore: {e}"),
        }
    }

    fn refuse<B>(&mut self, ctl: &mut Control<B>, k: &(u16, String), nonce: u64, why: &str)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        self.drop_app(ctl, k, "refused");
        let a = Answer::Refused {
            nonce,
            instance: ctl.instance,
            why: why.to_owned(),
        };
        self.answer(ctl, k, &a);
        tracing::warn!(domain = k.0, app = %k.1, "xen app refused: {why}");
    }

    /// Acts on what app `k` shows (`v`, read in `read` together with the other apps of
    /// this round).
    fn handle<B>(
        &mut self,
        ctl: &mut Control<B>,
        k: (u16, String),
        v: FrontendView,
        read: Duration,
        socket_taken: &[(String, Mac)],
    ) where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let t0 = Instant::now();
        let (d, ref name) = k;
        let name = name.clone();
        match v.state {
            XbState::Initialised => {
                let raw = v.attach.unwrap_or_default();
                let req = match AttachRequest::parse(&raw) {
                    Ok(r) => r,
                    Err(e) => {
                        let nonce = AttachRequest::nonce_of(&raw).unwrap_or(0);
                        if v.answer.is_some_and(|a| a.nonce() == nonce && nonce != 0) {
                            return; // refused already
                        }
                        return self.refuse(ctl, &k, nonce, &e.to_string());
                    }
                };
                // Answered already: by this instance, or by an earlier one (then the app is
                // about to see that server's death and start again with a new nonce).
                if v.answer.as_ref().is_some_and(|a| a.nonce() == req.nonce)
                    || self.apps.get(&k).is_some_and(|a| a.nonce == req.nonce)
                {
                    return;
                }
                // A new request (first, or the app started over): forget any earlier port.
                self.drop_app(ctl, &k, "it started a new handshake");
                // The domain's name as the toolstack wrote it (the guest cannot write it).
                let domain = self
                    .xs
                    .read(&format!("/local/domain/{d}/name"))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some(why) =
                    XenAdmission::refusal(&self.allowed, &name, req.mac, domain.as_deref())
                {
                    return self.refuse(ctl, &k, req.nonce, &why);
                }
                let mut taken = socket_taken.to_vec();
                taken.extend(self.view().taken);
                if let Err(e) = check_free(&taken, &name, req.mac) {
                    return self.refuse(ctl, &k, req.nonce, &e.to_string());
                }
                let Some(pool) = ctl.free_pool() else {
                    return self.refuse(ctl, &k, req.nonce, "no pool id left");
                };
                match self.attach(ctl, d, pool, &name, &req) {
                    Ok((e, mem)) => {
                        let port = e.id.0;
                        let a = Answer::Connected {
                            nonce: req.nonce,
                            instance: ctl.instance,
                            pool: pool.0,
                            port,
                        };
                        let t_attach = t0.elapsed();
                        // The answer in the port's header page too, and one ring of the
                        // app's doorbell: the app sees it without a xenstore round trip.
                        // `mem` is a handle on the port's mapping: it stays mapped while
                        // this handle lives.
                        let slot = PortAnswer {
                            nonce: req.nonce,
                            instance: ctl.instance,
                            pool: u32::from(pool.0),
                            port: u32::from(port),
                        };
                        if let Err(err) = slot.post(&mem.region()) {
                            tracing::warn!(domain = d, app = %name, "posting the answer in the port: {err}");
                        }
                        if let Err(err) = e.notifier.notify() {
                            tracing::warn!(domain = d, app = %name, "ringing the app: {err}");
                        }
                        self.apps.insert(
                            k.clone(),
                            Attached {
                                entry: e,
                                nonce: req.nonce,
                            },
                        );
                        self.answer(ctl, &k, &a);
                        let ms = |t: Duration| t.as_secs_f64() * 1e3;
                        tracing::info!(
                            domain = d,
                            app = %name,
                            port,
                            mac = %fmt_mac(req.mac),
                            pool = pool.0,
                            "xen app connected in {:.1} ms: request read {:.1} (one round trip for this round's apps), checked, mapped and on the switch {:.1}, answer sent {:.1}",
                            ms(read + t0.elapsed()),
                            ms(read),
                            ms(t_attach),
                            ms(t0.elapsed() - t_attach)
                        );
                    }
                    Err(why) => self.refuse(ctl, &k, req.nonce, &why),
                }
            }
            XbState::Closing | XbState::Closed if self.apps.contains_key(&k) => {
                self.drop_app(ctl, &k, "it closed");
                let _ = self.backend(ctl.instance).forget(d, &name);
                self.opened.remove(&k);
            }
            // Connected: attached here, or to an earlier instance (the app starts over by
            // itself once it sees that server died). Anything else: nothing asked.
            _ => {}
        }
    }

    /// Reads the app's grant, maps it, binds its event channel and puts its port on the
    /// switch. `mac` is the one admitted at Hello; the frontend's `mac` node is not read again.
    fn attach<B>(
        &mut self,
        ctl: &mut Control<B>,
        d: u16,
        pool: PoolId,
        name: &str,
        req: &AttachRequest,
    ) -> Result<(AppEntry<N>, Memory), String>
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let t0 = Instant::now();
        // The reference list: mapped read-only, copied out, unmapped, then checked.
        let list_refs: Vec<GrantRef> = req.list_refs.iter().map(|&r| GrantRef(r)).collect();
        let raw = {
            let list = ctl
                .backend
                .map(DomId(d), &list_refs, Access::ReadOnly, &[])
                .map_err(|e| format!("mapping the reference list: {e}"))?;
            let region = grant_pool::Mapping::region(&list);
            let mut raw = vec![0u8; region.len()];
            region
                .read(0, &mut raw)
                .map_err(|e| format!("reading the reference list: {e}"))?;
            raw
        };
        let max = self.backend(ctl.instance).max_refs();
        let refs = RefList::parse(&raw, max).map_err(|e| e.to_string())?.0;
        let refs: Vec<GrantRef> = refs.into_iter().map(GrantRef).collect();
        let t_list = t0.elapsed();
        let mapping = ctl
            .backend
            .map(DomId(d), &refs, Access::ReadWrite, &[])
            .map_err(|e| format!("mapping the grant: {e}"))?;
        let mem = grant_pool::Mapping::memory(&mapping).clone();
        let t_map = t0.elapsed();
        let notifier = ctl
            .backend
            .bind_notifier(DomId(d), req.event_channel, &[])
            .map_err(|e| format!("binding the event channel: {e}"))?;
        let e = ctl
            .add_app(name, req.mac, mapping, notifier, pool, None)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            domain = d,
            app = %name,
            "xen attach: reference list {:.1} ms, map {} pages {:.1} ms, bind + port {:.1} ms",
            t_list.as_secs_f64() * 1e3,
            refs.len(),
            (t_map - t_list).as_secs_f64() * 1e3,
            (t0.elapsed() - t_map).as_secs_f64() * 1e3
        );
        Ok((e, mem))
    }

    /// Takes every Xen app off the switch (the server is stopping) and says so in xenstore.
    pub fn close<B>(&mut self, ctl: &mut Control<B>)
    where
        B: GrantBackend<Notifier = N>,
        B::Mapping: 'static,
    {
        let keys: Vec<(u16, String)> = self.apps.keys().cloned().collect();
        for k in keys {
            self.drop_app(ctl, &k, "the server is stopping");
            let _ = self.backend(ctl.instance).forget(k.0, &k.1);
        }
    }
}
