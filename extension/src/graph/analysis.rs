//! Structural analysis: back edges, topological order, strongly connected
//! components and reachability. Everything is iterative (explicit stacks), so
//! a 100,000-node chain cannot overflow the backend's stack, and linear in
//! nodes + edges.

use crate::graph::model::Graph;

/// Per edge: does it close a cycle (target still on the DFS stack)? DFS
/// starts at the triggers in node order, then at any node not yet seen, so
/// the answer is deterministic for a given graph.
pub fn back_edges(g: &Graph) -> Vec<bool> {
    let n = g.nodes.len();
    let mut back = vec![false; g.edges.len()];
    // 0 = unseen, 1 = on stack, 2 = done
    let mut color = vec![0u8; n];
    let roots = (0..n)
        .filter(|&i| g.is_trigger(i))
        .chain((0..n).filter(|&i| !g.is_trigger(i)));
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in roots {
        if color[root] != 0 {
            continue;
        }
        color[root] = 1;
        stack.push((root, 0));
        while let Some(&(u, next)) = stack.last() {
            if let Some(&e) = g.out[u].get(next) {
                stack.last_mut().expect("non-empty").1 += 1;
                let v = g.edges[e].to.expect("adjacency holds resolved edges");
                match color[v] {
                    0 => {
                        color[v] = 1;
                        stack.push((v, 0));
                    }
                    1 => back[e] = true,
                    _ => {}
                }
            } else {
                color[u] = 2;
                stack.pop();
            }
        }
    }
    back
}

/// Topological order of the graph without its back edges (Kahn's algorithm,
/// ties broken by node order).
pub fn topo_order(g: &Graph, back: &[bool]) -> Vec<usize> {
    let n = g.nodes.len();
    let mut indeg = vec![0usize; n];
    for (i, e) in g.edges.iter().enumerate() {
        if let (Some(_), Some(t)) = (e.from, e.to) {
            if !back[i] {
                indeg[t] += 1;
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| indeg[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(u)) = ready.pop() {
        order.push(u);
        for &e in &g.out[u] {
            if back[e] {
                continue;
            }
            let v = g.edges[e].to.expect("resolved");
            indeg[v] -= 1;
            if indeg[v] == 0 {
                ready.push(std::cmp::Reverse(v));
            }
        }
    }
    order
}

/// Strongly connected components among the nodes `keep` allows (iterative
/// Tarjan). Returns only the components that contain a cycle: more than one
/// node, or one node with an edge to itself.
pub fn cyclic_components(g: &Graph, keep: &dyn Fn(usize) -> bool) -> Vec<Vec<usize>> {
    let n = g.nodes.len();
    const UNSEEN: usize = usize::MAX;
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut counter = 0;
    let mut out = Vec::new();
    let mut call: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN || !keep(root) {
            continue;
        }
        call.push((root, 0));
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(u, next)) = call.last() {
            if let Some(&e) = g.out[u].get(next) {
                call.last_mut().unwrap().1 += 1;
                let v = g.edges[e].to.expect("resolved");
                if !keep(v) {
                    continue;
                }
                if index[v] == UNSEEN {
                    index[v] = counter;
                    low[v] = counter;
                    counter += 1;
                    stack.push(v);
                    on_stack[v] = true;
                    call.push((v, 0));
                } else if on_stack[v] {
                    low[u] = low[u].min(index[v]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[u]);
                }
                if low[u] == index[u] {
                    let mut comp = Vec::new();
                    loop {
                        let w = stack.pop().expect("tarjan stack");
                        on_stack[w] = false;
                        comp.push(w);
                        if w == u {
                            break;
                        }
                    }
                    let self_loop =
                        comp.len() == 1 && g.out[u].iter().any(|&e| g.edges[e].to == Some(u));
                    if comp.len() > 1 || self_loop {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
    }
    out
}

/// Nodes reachable from `from` along resolved edges that `follow` allows.
pub fn reachable(g: &Graph, from: &[usize], follow: &dyn Fn(usize) -> bool) -> Vec<bool> {
    let mut seen = vec![false; g.nodes.len()];
    let mut todo: Vec<usize> = from.to_vec();
    for &f in from {
        seen[f] = true;
    }
    while let Some(u) = todo.pop() {
        for &e in &g.out[u] {
            if !follow(e) {
                continue;
            }
            let v = g.edges[e].to.expect("resolved");
            if !seen[v] {
                seen[v] = true;
                todo.push(v);
            }
        }
    }
    seen
}
