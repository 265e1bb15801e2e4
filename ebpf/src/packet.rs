//! Bounds-checked access to the packet. Every read goes through `load`, whose
//! comparison against data_end is what the verifier needs to see.
use aya_ebpf::programs::XdpContext;

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    ptr_at::<T>(ctx, off).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
pub fn be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    load::<[u8; 2]>(ctx, off).map(u16::from_be_bytes)
}
