//! Row kernels: kernels whose unit of work is one output row of one image (depthwise and
//! channels-last grouped convolution, max and average pooling; pooling over planes treats each plane as
//! an image of one channel, fpool.rs). Compiled models drive them from
//! generated loop nests (codegen/src/nest.rs) that split the rows into tasks, walk each task's rows and
//! address the row's input image and output row; `run` is the same nest in Rust, which the kernel tests
//! use.
use super::dwconv::DwGeom;
use super::pool;

/// The shape of a row kernel's iteration space, with byte strides for addressing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowShape {
    /// Images.
    pub n: usize,
    /// Output rows per image.
    pub oh: usize,
    /// Bytes of one input image.
    pub image_bytes: usize,
    /// Bytes of one output row.
    pub row_bytes: usize,
}

impl RowShape {
    /// The shape of an NHWC kernel over `g` with input and output elements of the given sizes.
    pub fn of(g: &DwGeom, in_elem: usize, out_elem: usize) -> RowShape {
        RowShape { n: g.n, oh: g.oh, image_bytes: g.h * g.w * g.c * in_elem, row_bytes: g.ow * g.c * out_elem }
    }

    /// Output rows of all images.
    pub fn rows(&self) -> usize {
        self.n * self.oh
    }

    /// Rows per task: tasks of a few rows cost less to hand out than single rows and still leave 16 or
    /// more tasks for a thread pool to balance where the output has that many rows.
    pub fn rows_per_task(&self) -> usize {
        (self.rows() / 16).clamp(1, 4)
    }

    pub fn tasks(&self) -> usize {
        self.rows().div_ceil(self.rows_per_task())
    }
}

/// A kernel computing output rows one at a time.
pub trait RowKernel: Sync {
    fn shape(&self) -> RowShape;
    /// The input's first byte (image 0).
    fn input(&self) -> *const u8;
    /// The output's first byte (row 0 of image 0).
    fn output(&self) -> *mut u8;

    /// Output row `oy` of the image whose input starts at `x` into `out`.
    ///
    /// # Safety
    /// `x` addresses one whole input image of this kernel and `out` one output row of it (RowShape's
    /// sizes); no other thread writes that row.
    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize);

    /// Every row on the thread pool: the Rust form of the loop nest codegen generates.
    ///
    /// # Safety
    /// The kernel's input and output buffers hold n images and n·oh rows, and do not overlap.
    unsafe fn run(&self) {
        let s = self.shape();
        let (x, out) = (self.input() as usize, self.output() as usize);
        pool::parallel_for(s.rows(), &|r| {
            let (b, oy) = (r / s.oh, r % s.oh);
            // SAFETY: row r of image b lies inside the buffers (the caller's contract); rows are disjoint.
            unsafe { self.row((x + b * s.image_bytes) as *const u8, (out + r * s.row_bytes) as *mut u8, oy) }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::RowShape;

    #[test]
    fn tasks_cover_every_row_once() {
        for n in 1..4 {
            for oh in 1..80 {
                let s = RowShape { n, oh, image_bytes: 0, row_bytes: 0 };
                let (per, tasks) = (s.rows_per_task(), s.tasks());
                assert!(per >= 1 && tasks * per >= s.rows() && (tasks - 1) * per < s.rows(), "{n} × {oh}");
                assert!(tasks >= s.rows().min(16), "{n} × {oh}: {tasks} tasks");
            }
        }
    }
}
