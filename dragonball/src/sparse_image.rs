//! Reading a boot image into guest memory that is known to be zero (a VM's fresh RAM):
//! only the blocks that hold something are written. The all-zero ones — the alignment
//! padding between a vmlinux's sections (x86_64 pads its text to 2 MiB) — then cost
//! neither a copy nor a guest page. The destination is advised transparent huge pages
//! first: the image is written almost in full, so they commit little the copy would not
//! (inside a huge page, the skipped zero blocks are committed after all).

use std::io::{Read, Seek, SeekFrom};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

/// The unit that is checked for zeros and skipped: a page.
const BLOCK: usize = 4096;
/// How much is read from the image per call.
const CHUNK: usize = 256 * BLOCK;

/// A boot image reader whose [`ReadVolatile`] leaves the destination's bytes alone where
/// the image has a whole zero block. Only for destinations that already read as zero.
pub struct SparseImage<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R> SparseImage<R> {
    /// Wraps `inner` (the kernel or initrd file).
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
        }
    }
}

impl<R: Read> Read for SparseImage<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for SparseImage<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read> ReadVolatile for SparseImage<R> {
    /// Fills `dest` up to the end of the image, as a file's read would: vm-memory takes a
    /// short read for the end of the image.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        dest: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        dbs_address_space::advise_huge_pages(dest);
        let mut done = 0;
        while done < dest.len() {
            let want = (dest.len() - done).min(CHUNK);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let read = match self.inner.read(&mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VolatileMemoryError::IOError(e)),
            };
            for (index, block) in self.buf[..read].chunks(BLOCK).enumerate() {
                if block.iter().any(|&byte| byte != 0) {
                    dest.offset(done + index * BLOCK)?.copy_from(block);
                }
            }
            done += read;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn image() -> Vec<u8> {
        // data, a zero page, data that ends mid-block.
        let mut image = vec![0x11u8; BLOCK];
        image.extend(vec![0u8; BLOCK]);
        image.extend(vec![0x22u8; BLOCK / 2]);
        image
    }

    #[test]
    fn zero_blocks_are_not_written_and_the_rest_is_copied() {
        let image = image();
        // A destination that is not zero shows which bytes were written.
        let mut memory = vec![0xaau8; image.len()];
        // SAFETY: `memory` outlives the slice and nothing else touches it meanwhile.
        let mut dest = unsafe { VolatileSlice::new(memory.as_mut_ptr(), memory.len()) };
        let mut reader = SparseImage::new(Cursor::new(image.clone()));
        reader.read_exact_volatile(&mut dest).unwrap();
        assert!(memory[..BLOCK].iter().all(|&b| b == 0x11));
        assert!(
            memory[BLOCK..2 * BLOCK].iter().all(|&b| b == 0xaa),
            "zero page written"
        );
        assert!(memory[2 * BLOCK..].iter().all(|&b| b == 0x22));
    }

    #[test]
    fn one_call_fills_a_destination_larger_than_a_chunk() {
        // vm-memory's read_exact_volatile_from takes a short read as the end of the image.
        let mut image = vec![0u8; CHUNK + 3 * BLOCK];
        image[CHUNK + BLOCK] = 1;
        let mut memory = vec![0u8; image.len()];
        // SAFETY: `memory` outlives the slice and nothing else touches it meanwhile.
        let mut dest = unsafe { VolatileSlice::new(memory.as_mut_ptr(), memory.len()) };
        let mut reader = SparseImage::new(Cursor::new(image.clone()));
        assert_eq!(reader.read_volatile(&mut dest).unwrap(), image.len());
        assert_eq!(memory, image);
    }

    #[test]
    fn into_zeroed_memory_the_result_is_the_image() {
        let image = image();
        let mut memory = vec![0u8; image.len() + 7];
        // SAFETY: `memory` outlives the slice and nothing else touches it meanwhile.
        let mut dest = unsafe { VolatileSlice::new(memory.as_mut_ptr().add(7), image.len()) };
        let mut reader = SparseImage::new(Cursor::new(image.clone()));
        reader.read_exact_volatile(&mut dest).unwrap();
        assert_eq!(&memory[7..], &image[..]);
        assert_eq!(reader.read_volatile(&mut dest).unwrap(), 0, "at the end");
    }
}
