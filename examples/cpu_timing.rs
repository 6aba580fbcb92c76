use std::time::Instant;
fn main() {
    let n = 1 << 24;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i % 4001) as f32 - 2000.0) * 0.01)
        .collect();
    let mut y = vec![0.0f32; n];
    for threads in [1, 2] {
        let cpu = sigmax::cpu::Cpu::new(Some(threads)).unwrap();
        for op in [sigmax::Op::Sigmoid] {
            cpu.elementwise_into(op, &x, &mut y).unwrap();
            let t = Instant::now();
            for _ in 0..5 {
                cpu.elementwise_into(op, &x, &mut y).unwrap();
            }
            println!(
                "{threads} threads {:?}: {:.2} ms",
                op,
                t.elapsed().as_secs_f64() * 1e3 / 5.0
            );
        }
        let opts = sigmax::SoftmaxOptions::default();
        for (r, c) in [(4096usize, 4096usize), (1 << 20, 16), (1, 1 << 24)] {
            cpu.softmax_with_into(&x, r, c, &opts, &mut y).unwrap();
            let t = Instant::now();
            for _ in 0..3 {
                cpu.softmax_with_into(&x, r, c, &opts, &mut y).unwrap();
            }
            println!(
                "{threads} threads softmax [{r}, {c}]: {:.2} ms",
                t.elapsed().as_secs_f64() * 1e3 / 3.0
            );
        }
        let t = Instant::now();
        for _ in 0..5 {
            y.copy_from_slice(&x);
        }
        println!("memcpy {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    }
}
