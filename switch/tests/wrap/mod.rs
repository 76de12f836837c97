//! For test ports that wrap a sim port (`self.inner`) to change some of what it does: the
//! `Port` methods they pass straight through.

/// The `Port` methods a wrapper passes to `self.inner` as they are: all but `rx_burst`,
/// `tx_burst`, `alloc` and the optional ones.
#[macro_export]
macro_rules! pass_through {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn mac(&self) -> pmd::Mac {
            self.inner.mac()
        }
        fn link(&self) -> pmd::LinkState {
            self.inner.link()
        }
        fn stats(&self) -> pmd::PortStats {
            self.inner.stats()
        }
        fn tx_pools(&self) -> grant_pool::PoolSet {
            self.inner.tx_pools()
        }
        fn own_pools(&self) -> grant_pool::PoolSet {
            self.inner.own_pools()
        }
        fn pools(&self) -> &[grant_pool::Pool] {
            self.inner.pools()
        }
        fn tx_done(&mut self, out: &mut [grant_pool::BufHandle]) -> usize {
            self.inner.tx_done(out)
        }
        fn reclaim(&mut self, bufs: &[grant_pool::BufHandle]) {
            self.inner.reclaim(bufs)
        }
    };
}
