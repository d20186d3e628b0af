package optim

// grain is how many elements one parallel chunk covers: large enough that a
// chunk's work dwarfs the scheduling, small enough that a 2-core machine and a
// 64-core one both stay busy on a rank's slice of a large model.
const grain = 1 << 16
